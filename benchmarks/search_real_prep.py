"""Build the two real corpora of search_real.py from files already on this machine (no network), with
ground-truth columns taken from the documents themselves, then ingest + encode + dense-embed them.

    python benchmarks/search_real_prep.py [--max-docs 1500] [--seed 0]

docstrings: function and method docstrings (`ast`) of the installed standard library, requests, numpy
and sklearn; columns from regexes over the docstring. debchangelog: entries of every
/usr/share/doc/*/changelog.Debian.gz; columns from the entry's header line and body.
Neither corpus is in ../shared/data; the stores go to $SAEEMBED_BENCH_DIR (default /tmp/saeembed-bench).
"""
from __future__ import annotations

import argparse
import ast
import gzip
import random
import re
import sys
import sysconfig
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import build_store  # noqa: E402

MAX_CHARS = 20_000  # longer texts are cut here: encoding time on CPU; still ~50x the median length

# ground truth of the docstrings corpus: column -> regex over the docstring
DOC_TRUTH = {
    "raises": re.compile(r"^\s*Raises\s*\n\s*-{3,}|^\s*Raises:|\braises?\b|\bRaise[sd]?\b", re.M),
    "raises_valueerror": re.compile(r"\bValueError\b"),
    "deprecated": re.compile(r"deprecat", re.I),
    "returns_bool": re.compile(r"\breturns?\s+(?:true|false|a\s+bool(?:ean)?|bool)\b"
                               r"|^\s*Returns\s*\n\s*-{3,}\s*\n\s*(?:\w+\s*:\s*)?bool\b", re.I | re.M),
    "has_example": re.compile(r"^\s*>>>", re.M),
    "mentions_file": re.compile(r"\bfiles?\b|\bfile-like\b|\bpath\b", re.I),
}


def docstring_rows(max_docs: int, seed: int) -> list[dict]:
    roots = [("stdlib", Path(sysconfig.get_paths()["stdlib"]))]
    for pkg in ("requests", "numpy", "sklearn"):
        mod = __import__(pkg)
        roots.append((pkg, Path(mod.__file__).parent))
    found = []
    for src, root in roots:
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            if any(part in rel for part in ("test", "site-packages", "idlelib", "lib2to3", "tkinter")):
                continue
            try:
                tree = ast.parse(path.read_text(encoding="utf-8"))
            except (SyntaxError, UnicodeDecodeError, ValueError):
                continue
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    doc = ast.get_docstring(node)
                    if doc and len(doc) >= 40:
                        found.append((src, f"{src}:{rel}:{node.name}:{node.lineno}", doc[:MAX_CHARS]))
    rng = random.Random(seed)
    rng.shuffle(found)
    rows = []
    for src, doc_id, text in found[:max_docs]:
        row = {"doc_id": doc_id, "text": text, "source": src}
        row.update({k: bool(rx.search(text)) for k, rx in DOC_TRUTH.items()})
        rows.append(row)
    return rows


HEADER = re.compile(r"^(\S+) \(([^)]+)\) ([^;]+);\s*(.*)$")


def changelog_rows(max_docs: int, seed: int, per_package: int = 4) -> list[dict]:
    entries = []
    for path in sorted(Path("/usr/share/doc").glob("*/changelog.Debian.gz")):
        try:
            text = gzip.open(path, "rt", encoding="utf-8", errors="replace").read()
        except OSError:
            continue
        current: list[str] = []
        parsed = []
        for line in text.splitlines():
            if HEADER.match(line) and current:
                parsed.append("\n".join(current).strip())
                current = []
            current.append(line)
        if current:
            parsed.append("\n".join(current).strip())
        entries += [(path.parent.name, i, e) for i, e in enumerate(parsed[:per_package])
                    if HEADER.match(e.splitlines()[0])]
    rng = random.Random(seed)
    rng.shuffle(entries)
    rows = []
    for pkg, i, entry in entries[:max_docs]:
        m = HEADER.match(entry.splitlines()[0])
        urgency = (re.search(r"urgency=(\w+)", m.group(4)) or [None, "unknown"])[1].lower()
        rows.append({
            "doc_id": f"{pkg}#{i}", "text": entry[:MAX_CHARS], "package": pkg, "distribution": m.group(3).strip(),
            "urgency": urgency,
            "cve": bool(re.search(r"CVE-\d{4}-\d+", entry)),
            "nmu": bool(re.search(r"non[- ]maintainer upload", entry, re.I)),
            "new_upstream": bool(re.search(r"new upstream (?:release|version|point release)", entry, re.I)),
            "ftbfs": bool(re.search(r"FTBFS|fails? to build", entry, re.I)),
            "team_upload": bool(re.search(r"team upload", entry, re.I)),
            "high_urgency": urgency in ("high", "emergency", "critical"),
            "experimental": m.group(3).strip() == "experimental",
        })
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-docs", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", choices=["docstrings", "debchangelog"], default=None)
    a = ap.parse_args()
    builders = {"docstrings": docstring_rows, "debchangelog": changelog_rows}
    for name, fn in builders.items():
        if a.only and name != a.only:
            continue
        rows = fn(a.max_docs, a.seed)
        store, t = build_store(f"real_{name}_{a.max_docs}_s{a.seed}", rows, corpus=name)
        cols = [c for c in rows[0] if isinstance(rows[0][c], bool)]
        print(name, len(rows), "docs", {k: round(v, 1) for k, v in t.items()},
              {c: sum(r[c] for r in rows) for c in cols}, flush=True)
        store.close()


if __name__ == "__main__":
    main()
