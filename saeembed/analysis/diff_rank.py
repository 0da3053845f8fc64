"""The rankings of a diff: what differs (raw), and what differs beyond length (length-controlled).

When the sides' lengths differ, one table answers both questions: its rows carry `ranking` ("raw":
difference in the share of documents, two-proportion/Fisher or McNemar q; "length_controlled": the
stratum-weighted difference and CMH q within token-length strata). Each row keeps both sets of
numbers; `effect`, `p_value`, `q_value` and `more_in` are its own ranking's. Raw comes first: on the
benchmark pairs its top-10 carried more of the all-feature separability than the length-controlled
top-10 (benchmarks/results/diff_separability.md), and it is what a reader asks first.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from saeembed.stats import bh

RANKINGS = ("raw", "length_controlled")


def _ranked(frame: pl.DataFrame, name: str, effect: str, p: str, q: str, top: int | None) -> pl.DataFrame:
    out = frame.with_columns(ranking=pl.lit(name), effect=pl.col(effect), p_value=pl.col(p), q_value=pl.col(q))
    out = (out.with_columns(more_in=pl.when(pl.col("effect") > 0).then(pl.lit("A"))
                            .when(pl.col("effect") < 0).then(pl.lit("B")).otherwise(pl.lit("=")))
           .sort([pl.col("effect").abs(), pl.col("p_value"), pl.col("feature")], descending=[True, False, False],
                 nulls_last=True))
    return out if top is None else out.head(top)


def rank(frame: pl.DataFrame, *, p_first: str, length: bool, top: int | None) -> tuple[pl.DataFrame, dict]:
    """Rows of each ranking, best first (the first `top` of each), and per ranking the number of
    features at q <= 0.05 among all tested. frame: one row per tested feature with diff, diff_adj,
    p_raw, p_adj and the raw ranking's p-value in column `p_first`."""
    def q(col):
        return pl.Series(bh(frame[col].to_numpy()) if frame.height else [], dtype=pl.Float64)

    frame = frame.with_columns(q_raw=q("p_raw"), _q_first=q(p_first),
                               q_adj=q("p_adj") if length else pl.Series(np.full(frame.height, np.nan)))
    parts = {"raw": _ranked(frame, "raw", "diff", p_first, "_q_first", None)}
    if length:
        parts["length_controlled"] = _ranked(frame, "length_controlled", "diff_adj", "p_adj", "q_adj", None)
    significant = {k: int((v["q_value"] <= 0.05).sum()) for k, v in parts.items()}
    rows = pl.concat([parts[k] if top is None else parts[k].head(top) for k in RANKINGS if k in parts])
    rows = rows.drop("_q_first").with_columns(pl.col("diff_adj", "p_adj", "q_adj").fill_nan(None))
    return rows, significant


def top_features(frame: pl.DataFrame, n: int | list[int]) -> dict[str, list[int]]:
    """The first n features of each ranking of a diff frame (n: one count for all, or one per ranking in order)."""
    rankings = frame["ranking"].unique(maintain_order=True).to_list()
    counts = n if isinstance(n, list) else [n] * len(rankings)
    return {k: frame.filter(pl.col("ranking") == k)["feature"].head(c).to_list() for k, c in zip(rankings, counts)}


SEPARABILITY_FIELDS = ("top", "auroc_top", "auroc_listed", "auroc_all", "auroc_length", "share_of_all", "folds", "fold_kind",
                       "docs_a", "docs_b", "sampled")


def with_separability(frame: pl.DataFrame, summary: dict) -> pl.DataFrame:
    """The rows with a `separability` struct column: the diff's figure as seen from each row's ranking
    (auroc_top and share_of_all are that ranking's; auroc_listed: both sections together, null with one).
    Null when it was not computed."""
    sep = summary.get("separability")
    if not sep or frame.is_empty():
        return frame.with_columns(separability=pl.lit(None))
    values = []
    for ranking in frame["ranking"].to_list():
        values.append({k: (sep["auroc_top"].get("listed") if k == "auroc_listed" else
                           sep[k].get(ranking) if isinstance(sep[k], dict) else sep[k]) for k in SEPARABILITY_FIELDS})
    return frame.with_columns(pl.Series("separability", values))
