"""Fusions of an SAE ranking and the dense ranking, scored offline on the rankings search_real.py saved.

    python benchmarks/search_real.py --sets debchangelog --methods "dense,sae" --out deb.json
    python benchmarks/search_fusion.py deb.json [more.json ...] [--sae-method sae]

Reciprocal-rank fusion score of a document = sum over the rankings r of w_r / (k + rank_r); a ranking
that does not hold the document adds nothing. Prints MAP and P@20 per set for a grid of (k, SAE weight).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from search_persona import average_precision, p_at  # noqa: E402


def rrf(rankings: list[list[int]], weights: list[float], k: float) -> list[int]:
    score: dict[int, float] = {}
    for ranked, w in zip(rankings, weights):
        for r, d in enumerate(ranked, 1):
            score[d] = score.get(d, 0.0) + w / (k + r)
    return sorted(score, key=lambda d: (-score[d], d))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="+")
    ap.add_argument("--sae-method", default="sae")
    a = ap.parse_args()
    rows = [r for f in a.files for r in json.loads(Path(f).read_text())]
    by_query: dict[tuple, dict] = {}
    for r in rows:
        by_query.setdefault((r["set"], r["query"]), {})[r["method"]] = r
    out = []
    for (name, query), m in by_query.items():
        if "dense" not in m or a.sae_method not in m:
            continue
        rel = set(m["dense"]["relevant_idx"])
        sae, dense = m[a.sae_method]["ranked"], m["dense"]["ranked"]
        out.append({"set": name, "query": query, "fusion": "dense", "ap": average_precision(dense, rel),
                    "p20": p_at(dense, rel, 20)})
        out.append({"set": name, "query": query, "fusion": a.sae_method, "ap": average_precision(sae, rel),
                    "p20": p_at(sae, rel, 20)})
        for k in (10, 60):
            for w in (0.5, 1.0, 2.0):
                fused = rrf([sae, dense], [w, 1.0], k)
                out.append({"set": name, "query": query, "fusion": f"rrf k={k} w_sae={w}",
                            "ap": average_precision(fused, rel), "p20": p_at(fused, rel, 20)})
    frame = pl.DataFrame(out)
    summary = frame.group_by("set", "fusion", maintain_order=True).agg(MAP=pl.col("ap").mean(), P20=pl.col("p20").mean())
    with pl.Config(tbl_rows=200, tbl_formatting="MARKDOWN", tbl_hide_dataframe_shape=True, float_precision=3,
                   tbl_hide_column_data_types=True):
        print(summary)


if __name__ == "__main__":
    main()
