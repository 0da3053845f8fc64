"""How often the local hint ("· here «CV» 10/10", saeembed.analysis.local_tokens) shows beside a label.

    python benchmarks/local_hints.py build --store /tmp/walk/walk.duckdb   # corpora from this machine (~1.5 min)
    saeembed demo                                                          # in /tmp/s8demo: the demo store
    python benchmarks/local_hints.py run --store /tmp/walk/walk.duckdb --demo /tmp/s8demo/demo.duckdb

The corpora are not in ../shared/data: 800 Debian changelog entries (/usr/share/doc/*/changelog.Debian.gz,
metadata `kind` = security when an entry names a CVE) and 800 docstrings of the Python standard library
(`kind` = class / function), seeded samples. `run` prints one table row per diff and features listing: how
many rows carry a hint, and the first three.
"""

from __future__ import annotations

import argparse
import gzip
import glob
import importlib
import inspect
import json
import random
import re
import subprocess
import sys
from pathlib import Path

MODULES = ["json", "os", "re", "collections", "itertools", "functools", "pathlib", "subprocess", "shutil", "argparse",
           "logging", "email", "http.client", "urllib.parse", "asyncio", "decimal", "statistics", "datetime",
           "textwrap", "csv", "sqlite3", "zipfile", "tarfile", "socket", "threading", "unittest", "typing", "inspect",
           "ast", "string"]


def changelogs(n: int) -> list[dict]:
    rows = []
    for path in sorted(glob.glob("/usr/share/doc/*/changelog.Debian.gz")):
        try:
            text = gzip.open(path, "rt", errors="replace").read()
        except OSError:
            continue
        for entry in re.split(r"\n(?=\S+ \([^)]*\) )", text)[:5]:
            body = "\n".join(line.strip() for line in entry.splitlines()[1:] if line.strip().startswith(("*", "-", "[")))
            if 40 < len(body) < 2000:
                rows.append({"text": body, "package": path.split("/")[4], "kind": "security" if "CVE" in body else "other"})
    random.Random(0).shuffle(rows)
    return rows[:n]


def docstrings(n: int) -> list[dict]:
    rows = []
    for name in MODULES:
        module = importlib.import_module(name)
        for _, obj in inspect.getmembers(module):
            if inspect.isfunction(obj) or inspect.isclass(obj):
                doc = inspect.getdoc(obj)
                if doc and 40 < len(doc) < 3000:
                    rows.append({"text": doc, "module": name, "kind": "class" if inspect.isclass(obj) else "function"})
    random.Random(0).shuffle(rows)
    return rows[:n]


def build(store: str, n: int) -> None:
    folder = Path(store).parent
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("changelogs", changelogs(n)), ("docstrings", docstrings(n))):
        path = folder / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        for cmd in (["ingest", str(path), "--corpus", name], ["encode", name]):
            subprocess.run([sys.executable, "-c", "from saeembed.cli.app import main; main()", *cmd, "--store", store],
                           check=True)


def run(store: str, demo: str | None) -> None:
    import polars as pl

    from saeembed.analysis.diff import DiffConfig, diff_corpora, diff_slices
    from saeembed.analysis.feature_list import list_features
    from saeembed.config import FeaturesConfig
    from saeembed.store import Store

    cfg = DiffConfig(top=20)
    cases = [(store, "diff changelogs docstrings", lambda s: diff_corpora(s, "changelogs", "docstrings", config=cfg).frame),
             (store, "diff changelogs --where \"kind = 'security'\"",
              lambda s: diff_slices(s, "changelogs", "kind = 'security'", config=cfg).frame),
             (store, "diff docstrings --where \"kind = 'class'\"",
              lambda s: diff_slices(s, "docstrings", "kind = 'class'", config=cfg).frame),
             (store, "features --corpus changelogs --top 20",
              lambda s: list_features(s, "changelogs", config=FeaturesConfig(top=20)).frame),
             (store, "features --corpus docstrings --top 20",
              lambda s: list_features(s, "docstrings", config=FeaturesConfig(top=20)).frame)]
    if demo:
        cases += [(demo, "diff support_tickets product_reviews",
                   lambda s: diff_corpora(s, "support_tickets", "product_reviews", config=cfg).frame),
                  (demo, "diff toxicity --where \"toxic = true\"",
                   lambda s: diff_slices(s, "toxicity", "toxic = true", config=cfg).frame),
                  (demo, "features --corpus toxicity --top 20",
                   lambda s: list_features(s, "toxicity", config=FeaturesConfig(top=20)).frame)]
    print("| listing | rows with a hint | first three |\n|---|---|---|")
    for path, name, listing in cases:
        with Store(path, read_only=True) as s:
            frame = listing(s).unique("feature", maintain_order=True)
        hinted = frame.filter(pl.col("here").is_not_null())
        first = "; ".join(f'#{r["feature"]} {r["label"][:32]} → {r["here"]}' for r in hinted.head(3).iter_rows(named=True))
        print(f"| `{name}` | {hinted.height} of {frame.height} | {first} |".replace("|  |", "| |"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("step", choices=["build", "run"])
    ap.add_argument("--store", default="/tmp/walk/walk.duckdb")
    ap.add_argument("--demo", default=None)
    ap.add_argument("--docs", type=int, default=800)
    args = ap.parse_args()
    build(args.store, args.docs) if args.step == "build" else run(args.store, args.demo)


if __name__ == "__main__":
    main()
