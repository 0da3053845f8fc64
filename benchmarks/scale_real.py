"""Every analysis on ~100 k real encoded documents (time and peak memory), and encode throughput
local vs Ray with 1 and 2 workers.

    python benchmarks/scale_real.py build [--docs 100000]    # ingest + encode (resumable), ~15-30 min on 2 cores
    python benchmarks/scale_real.py run                      # each CLI command in a fresh process: s + peak RSS
    python benchmarks/scale_real.py ray [--docs 2000]        # encode tokens/s: local, Ray 1 worker, Ray 2 workers
    python benchmarks/scale_real.py synthetic --store S       # classify, filter, cluster, label, export on the
                                                             # 1 M-document store of benchmarks/diff/speed.py build

Documents: a seeded sample of the short real texts in ../shared/data (TweetEval tweets, AG News,
Davidson tweets with their `toxic` label, persona statements), with a `source` column; embedded
all-MiniLM-L6-v2 + the default SAE. Each command runs through the real CLI (`saeembed ...`) in its own
process; peak RSS is that process's maximum resident set size.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, SCRATCH, machine, need, read_jsonl  # noqa: E402

STORE = SCRATCH / "scale_real.duckdb"
SOURCES = {  # name -> (file, how many at most)
    "tweets": ("sae-train/tweets.jsonl", None),
    "ag_news": ("sae-train/ag_news.jsonl", None),
    "davidson": ("eval/toxicity/davidson.jsonl", None),
}


def gather(n_docs: int, seed: int = 0) -> list[dict]:
    rows = []
    for source, (rel, _) in SOURCES.items():
        for r in read_jsonl(need(DATA / rel)):
            rows.append({"text": r["text"], "source": source, "toxic": r.get("toxic")})
    for path in sorted(need(DATA / "eval/retrieval/persona").glob("*.jsonl")):
        rows += [{"text": r["text"], "source": "persona", "toxic": None} for r in read_jsonl(path)]
    rng = random.Random(seed)
    rng.shuffle(rows)
    seen, out = set(), []
    for r in rows:  # ids must be unique: drop repeated texts
        if r["text"].strip() and r["text"] not in seen:
            seen.add(r["text"])
            out.append(r | {"doc_id": f"r{len(out)}"})
        if len(out) == n_docs:
            break
    return out


def cli(*args) -> list[str]:
    return [sys.executable, "-m", "saeembed.cli.app", *map(str, args)]


def env() -> dict:
    return dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")


def measured(args: list, store: Path = STORE, timeout: float | None = None) -> dict:
    """Run one CLI command in a fresh process; seconds, that process's peak RSS (MB) and exit code
    (killed after `timeout` seconds: rc -9)."""
    import tempfile
    import threading

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t = time.perf_counter()
        proc = subprocess.Popen(cli(*args, "--store", store), env=env(), stdout=out, stderr=err)
        timer = threading.Timer(timeout, proc.kill) if timeout else None
        if timer:
            timer.start()
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage
        if timer:
            timer.cancel()
        seconds = time.perf_counter() - t
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    return {"seconds": round(seconds, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024), "rc": proc.returncode,
            "err": stderr.strip().splitlines()[-1:] if proc.returncode else [], "out": stdout}


def build(args) -> None:
    SCRATCH.mkdir(parents=True, exist_ok=True)
    src = SCRATCH / f"scale_real_{args.docs}.jsonl"
    if not src.exists():
        rows = gather(args.docs)
        src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        print(f"{len(rows):,} documents -> {src}")
    if not STORE.exists():
        r = measured(["ingest", src, "--corpus", "real", "--id-column", "doc_id"])
        print("ingest", r)
    r = measured(["encode", "real", "--json"])
    print("encode", r)


COMMANDS = [  # (what, CLI args) on the corpus `real`
    ("info", ["info", "--json"]),
    ("features --top 20", ["features", "--corpus", "real", "--top", "20", "--json"]),
    ("export (Parquet)", ["export", "real", "--out", SCRATCH / "scale_real_export.parquet"]),
    ("diff --by source (4 groups)", ["diff", "real", "--by", "source", "--top", "20", "--json"]),
    ("diff --where tweets --vs ag_news", ["diff", "real", "--where", "source = 'tweets'", "--vs",
                                          "source = 'ag_news'", "--top", "20", "--json"]),
    ("correlate (NPMI)", ["correlate", "real", "--top", "20", "--json"]),
    ("correlate --with-column source", ["correlate", "real", "--with-column", "source", "--top", "20", "--json"]),
    ("search -f 3 features", ["search", "--corpus", "real", "-f", "100", "-f", "200", "-f", "300", "--top", "20", "--json"]),
    ("search text query (first: embeds feature descriptions)", ["search", "wants more money", "--corpus", "real", "--top", "20", "--json"]),
    ("search text query (cached)", ["search", "angry insult", "--corpus", "real", "--top", "20", "--json"]),
    ("search --dense (first: embeds documents, builds FAISS)", ["search", "wants more money", "--corpus", "real", "--dense", "--top", "20", "--json"]),
    ("search --hybrid", ["search", "wants more money", "--corpus", "real", "--hybrid", "--top", "20", "--json"]),
    ("similar r0", ["similar", "r0", "--corpus", "real", "--top", "10", "--json"]),
    ("cluster k-means k=8 (all features, SVD)", ["cluster", "real", "--k", "8", "--name", "k8", "--json"]),
    ("cluster HDBSCAN (all features)", ["cluster", "real", "--name", "hdb", "--json"]),
    ("classify train toxic (Davidson rows)", ["classify", "train", "real", "--label-column", "toxic",
                                              "--name", "tox", "--json"]),
    ("classify apply tox", ["classify", "apply", "tox", "--corpus", "real", "--json"]),
    ("filter --drop tox --dedupe 0.9 --dry-run", ["filter", "real", "--drop", "tox > 0.8", "--dedupe", "0.9",
                                                  "--dry-run", "--json"]),
    ("label 50 live features (offline)", ["label", "--all-live", "--limit", "50", "--corpus", "real", "--json"]),
    ("report diff", ["report", "diff", "real", "--where", "source = 'tweets'", "--vs", "source = 'persona'",
                     "--out", SCRATCH / "scale_real_diff.html", "--json"]),
]


def run(args) -> None:
    results = []
    for what, cmd in COMMANDS:
        if args.only and args.only not in what:
            continue
        r = measured(cmd)
        results.append({"what": what, **r})
        print(f"{what:60s} {r['seconds']:8.2f} s  {r['peak_rss_mb']} MB  rc={r['rc']} {r['err']}", flush=True)
    out = SCRATCH / "scale_real_results.json"
    out.write_text(json.dumps({"machine": machine(), "load": os.getloadavg(), "results": results}, indent=1, default=str))
    print(f"-> {out}; load average {os.getloadavg()}")


def ray(args) -> None:
    src = SCRATCH / f"scale_real_ray_{args.docs}.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in gather(args.docs, seed=1)), encoding="utf-8")
    for label, extra in [("local", []), ("ray 1 worker", ["--backend", "ray", "--workers", "1"]),
                         ("ray 2 workers", ["--backend", "ray", "--workers", "2"])]:
        store = SCRATCH / f"scale_real_ray_{label.replace(' ', '_')}.duckdb"
        for f in SCRATCH.glob(store.name + "*"):
            subprocess.run(["rm", "-rf", str(f)])
        measured(["ingest", src, "--corpus", "r", "--id-column", "doc_id"], store)
        measured(["encode", "r", "--json"], store)  # warm-up: also computes the SAE's random-token probe
        measured(["encode", "r", "--replace", "--json", *extra], store)
        r = measured(["encode", "r", "--replace", "--json", *extra], store)
        stats = json.loads(r["out"]) if r["rc"] == 0 and r["out"].startswith("{") else {}
        tokens = stats.get("tokens")
        print(f"{label:15s} {r['seconds']:7.1f} s wall (process start and model load included)  "
              f"tokens {tokens}  encode-loop tok/s {stats.get('tokens_per_s')}  rc={r['rc']} {r['err']}", flush=True)
    print(f"load average {os.getloadavg()}; {machine()}")


SYNTHETIC = [  # the analyses not timed elsewhere at 1 M documents (diff/correlate: diff/speed.py; search: search_cluster_speed.py)
    ("classify train halfprob (L1 probe, CV over C)", ["classify", "train", "big", "--label-column", "half", "--name", "halfprob", "--json"]),
    ("classify apply halfprob", ["classify", "apply", "halfprob", "--corpus", "big", "--json"]),
    ("filter --drop 'halfprob > 0.5' --dedupe 0.9 --dry-run", ["filter", "big", "--drop", "halfprob > 0.5", "--dedupe", "0.9", "--dry-run", "--json"]),
    ("cluster k-means k=8 on 50 features", ["cluster", "big", "--k", "8", *sum((["-f", str(f)] for f in range(50)), []), "--name", "k8", "--json"]),
    ("label 20 features (offline)", ["label", "--features", ",".join(map(str, range(20))), "--corpus", "big", "--json"]),
    ("features --top 20", ["features", "--corpus", "big", "--top", "20", "--json"]),
    ("export (Parquet)", ["export", "big", "--out", SCRATCH / "synthetic_export.parquet"]),
]


def synthetic(args) -> None:
    for what, cmd in SYNTHETIC:
        r = measured(cmd, Path(args.store), timeout=args.timeout)
        print(f"{what:60s} {r['seconds']:8.2f} s  {r['peak_rss_mb']} MB  rc={r['rc']} {r['err']}", flush=True)
    print(f"load average {os.getloadavg()}; {machine()}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("--docs", type=int, default=100_000)
    r = sub.add_parser("run")
    r.add_argument("--only", default=None, help="run only the commands whose name contains this")
    y = sub.add_parser("ray")
    y.add_argument("--docs", type=int, default=2000)
    z = sub.add_parser("synthetic")
    z.add_argument("--store", required=True)
    z.add_argument("--timeout", type=float, default=900, help="seconds per command before it is killed")
    args = p.parse_args()
    {"build": build, "run": run, "ray": ray, "synthetic": synthetic}[args.cmd](args)


if __name__ == "__main__":
    main()
