"""First vs later text search on a fresh demo store with the default SAE (and its atlas).

    python3 benchmarks/atlas_search.py [--store /tmp/atlas_demo.duckdb]

Builds the demo store (the four sample corpora, encoded with the default SAE) unless it exists, then
times the same `search` call three times, each in a fresh process (model loading counted every time):
1. the first query the store ever answers, 2. a different query after it, 3. the first query again.
Also times the feature-matching step alone (`describe`: query vs feature description vectors), which is
what embedded every feature's description on a store's first query before the atlas.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
from saeembed.store import Store
from saeembed.analysis.retrieve import search
from saeembed.interp.match import match_features
with Store(sys.argv[1]) as st:
    sae = st.encoded_sae("support_tickets")
    t1 = time.perf_counter()
    m = match_features(st, sae, sys.argv[2], method="describe", top=5)
    t2 = time.perf_counter()
    r = search(st, "support_tickets", sys.argv[2], top=5)
    t3 = time.perf_counter()
    print(json.dumps({"describe_s": t2 - t1, "search_s": t3 - t2, "process_s": t3 - t0,
                      "features": m["label"].to_list()[:3], "top_doc": r.row(0, named=True).get("doc_id")}))
"""


def child(store: str, query: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, store, query], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", default="/tmp/atlas_demo.duckdb")
    args = ap.parse_args()
    if not Path(args.store).exists():
        from saeembed.pipelines.demo import run_demo

        t = time.perf_counter()
        run_demo(args.store)
        print(f"demo store built in {time.perf_counter() - t:.1f} s")
    runs = [("first query on a fresh store", "a refund for a late order"),
            ("another query", "the app crashes when I log in"),
            ("the first query again", "a refund for a late order")]
    print("| run | describe step (s) | whole search (s) | process incl. model load (s) | top feature labels |")
    print("|---|---|---|---|---|")
    for name, q in runs:
        r = child(args.store, q)
        print(f"| {name}: “{q}” | {r['describe_s']:.2f} | {r['search_s']:.2f} | {r['process_s']:.2f} | "
              f"{'; '.join(str(x) for x in r['features'])} |")


if __name__ == "__main__":
    main()
