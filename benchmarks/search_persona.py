"""Property search on the persona statements: mean average precision and P@10, SAE vs dense vs hybrid.

    python benchmarks/prep_persona.py --properties 16 --per-property 300     # ingest + encode + dense
    python benchmarks/search_persona.py --properties 16 --per-property 300 [--pool-others 2000]

For each property: query = its name as a phrase ("desire for acquiring wealth"); pool = its sampled
statements + `--pool-others` statements of the other sampled properties (seeded); relevant = its
statements with matches = true (its matches = false statements are hard negatives on the same topic).
Each method ranks the whole pool (depth = pool size); AP counts unranked relevant statements as missed.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SCRATCH, machine  # noqa: E402


def average_precision(ranked: list[int], relevant: set[int]) -> float:
    hits, total = 0, 0.0
    for k, d in enumerate(ranked, 1):
        if d in relevant:
            hits += 1
            total += hits / k
    return total / max(len(relevant), 1)


def p_at(ranked: list[int], relevant: set[int], k: int = 10) -> float:
    return sum(d in relevant for d in ranked[:k]) / k


METHODS = {  # name -> search kwargs
    "dense": dict(mode="dense"),
    "sae describe": dict(mode="sae", match="describe"),
    "sae prf": dict(mode="sae", match="prf"),
    "sae auto": dict(mode="sae", match="auto"),
    "hybrid (auto + dense RRF)": dict(mode="hybrid", match="auto"),
}


def main() -> None:
    from saeembed.analysis.retrieve import search
    from saeembed.store import Store

    ap = argparse.ArgumentParser()
    ap.add_argument("--properties", type=int, default=16)
    ap.add_argument("--per-property", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pool-others", type=int, default=2000)
    ap.add_argument("--n-features", type=int, default=30)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--out", default=None, help="write per-property rows as JSON here")
    a = ap.parse_args()
    name = f"persona_p{a.properties}_n{a.per_property}_s{a.seed}"
    path = SCRATCH / f"{name}.duckdb"
    if not path.exists():
        sys.exit(f"run benchmarks/prep_persona.py --properties {a.properties} --per-property {a.per_property} first")
    store = Store(path)
    docs = store.documents("persona", text=False)
    rng = np.random.default_rng(a.seed)
    methods = [m.strip() for m in a.methods.split(",")]
    rows = []
    t0 = time.perf_counter()
    for prop in sorted(docs["property"].unique().to_list()):
        mine = docs.filter(pl.col("property") == prop)
        others = docs.filter(pl.col("property") != prop)["doc_idx"].to_numpy()
        pool = np.concatenate([mine["doc_idx"].to_numpy(), rng.choice(others, min(a.pool_others, len(others)), replace=False)])
        relevant = set(mine.filter(pl.col("matches"))["doc_idx"].to_list())
        query = prop.replace("-", " ")
        for m in methods:
            t = time.perf_counter()
            got = search(store, "persona", query, top=len(pool), depth=len(pool), doc_idx=pool,
                         n_features=a.n_features, **METHODS[m])
            ranked = got["doc_idx"].to_list()
            rows.append({"property": prop, "method": m, "ap": average_precision(ranked, relevant),
                         "p10": p_at(ranked, relevant), "seconds": time.perf_counter() - t,
                         "pool": len(pool), "relevant": len(relevant)})
        print(prop, {r["method"]: round(r["ap"], 3) for r in rows[-len(methods):]}, flush=True)
    frame = pl.DataFrame(rows)
    summary = (frame.group_by("method").agg(MAP=pl.col("ap").mean(), P10=pl.col("p10").mean(),
                                             median_s=pl.col("seconds").median())
               .sort("MAP", descending=True))
    print(f"\n{name}: {len(frame['property'].unique())} properties, pool ~{int(frame['pool'].mean())}, "
          f"relevant ~{int(frame['relevant'].mean())}, n_features {a.n_features}, {time.perf_counter() - t0:.0f}s")
    print(machine())
    with pl.Config(tbl_rows=20, tbl_formatting="MARKDOWN", tbl_hide_dataframe_shape=True, float_precision=3,
                   tbl_hide_column_data_types=True):
        print(summary)
    if a.out:
        Path(a.out).write_text(json.dumps(rows, indent=1))
    store.close()


if __name__ == "__main__":
    main()
