"""How well a clustering matches a metadata column: the crosstab of clusters against the column's
values, with purity, adjusted Rand index and normalised mutual information (sklearn.metrics).

Purity is the share of clustered documents that carry their cluster's most common value (1.0 when
every cluster is pure; it rewards many small clusters, so read it with ARI and NMI, which do not).
The metrics count documents in a cluster with a value: HDBSCAN noise (cluster -1) and documents
without a value are left out, and counted. The crosstab shows every cluster, noise included.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from saeembed.errors import InputError
from saeembed.store import Store
from saeembed.store.records import CorpusInfo, SAEInfo

MAX_VALUES = 50  # a column with more distinct values is no grouping to compare clusters with


def compare_saved(store: Store, name: str, column: str) -> tuple[pl.DataFrame, dict]:
    """compare_with_column for the clustering saved as `name` by `saeembed cluster`."""
    saved = store.stored_clustering(name)
    return compare_with_column(store, saved["corpus"], saved["assignments"], column, sae=saved["sae"], name=name)


def check_column(store: Store, info: CorpusInfo, column: str) -> None:
    """Refuse a column the corpus's document table does not have, before any work is done."""
    allowed = store.filter_columns(info)
    if column not in allowed:
        raise InputError(f"corpus {info.name!r} has no column {column!r} to compare with; columns: {', '.join(allowed)}")


def compare_with_column(store: Store, info: CorpusInfo, assignments: pl.DataFrame, column: str, *,
                        sae: SAEInfo | None = None, name: str | None = None) -> tuple[pl.DataFrame, dict]:
    """Crosstab of clusters (assignments: doc_idx, cluster) against a column of the corpus's documents
    (metadata, doc_id, n_chars, n_tokens or another saved clustering `cluster.NAME`), and a dict with
    purity, ari, nmi and the counts behind them.

    crosstab: one row per cluster: cluster, size, one count column per value of the column (in value
    order), top_value and top_share (the share of the cluster's documents with a value that carry the
    top one)."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    check_column(store, info, column)
    table = store.doc_table(info, sae, columns=[column])
    joined = assignments.select(pl.col("doc_idx").cast(pl.Int64), pl.col("cluster").cast(pl.Int64)).join(
        table.select(pl.col("doc_idx").cast(pl.Int64), pl.col(column).alias("_value")), on="doc_idx", how="left")
    values = joined["_value"]
    n_values = values.drop_nulls().n_unique()
    if n_values > MAX_VALUES:
        raise InputError(f"column {column!r} has {n_values} distinct values; comparing clusters needs a grouping "
                         f"column with at most {MAX_VALUES}")
    if n_values == 0:
        raise InputError(f"column {column!r} has no value on the clustered documents; nothing to compare")
    joined = joined.with_columns(_value=_as_text(values))
    crosstab = _crosstab(joined, column)
    scored = joined.filter((pl.col("cluster") >= 0) & pl.col("_value").is_not_null())
    truth, found = scored["_value"].to_list(), scored["cluster"].to_numpy()
    metrics = {
        "clustering": name, "corpus": info.name, "column": column,
        "n_docs": scored.height, "n_noise": int((joined["cluster"] < 0).sum()),
        "n_missing": int(joined.filter(pl.col("cluster") >= 0)["_value"].null_count()),
        "n_clusters": int(scored["cluster"].n_unique()), "n_values": int(scored["_value"].n_unique()),
        "purity": None, "ari": None, "nmi": None,
    }
    if scored.height:
        top = scored.group_by("cluster", "_value").len().group_by("cluster").agg(pl.col("len").max())
        metrics["purity"] = float(top["len"].sum() / scored.height)
        metrics["ari"] = float(adjusted_rand_score(truth, found))
        metrics["nmi"] = float(normalized_mutual_info_score(truth, found))
    return crosstab, metrics


def _as_text(values: pl.Series) -> pl.Series:
    """Values as the crosstab's column names: text; whole numbers without a trailing .0."""
    if values.dtype.is_float() and values.drop_nulls().is_in(values.drop_nulls().round(0)).all():
        values = values.cast(pl.Int64)
    return values.cast(pl.Utf8)


def _crosstab(joined: pl.DataFrame, column: str) -> pl.DataFrame:
    reserved = {"cluster", "size", "top_value", "top_share"}
    present = joined.filter(pl.col("_value").is_not_null())
    values = sorted(present["_value"].unique().to_list(), key=_natural)
    names = [f"{column}={v}" if v in reserved else v for v in values]
    present = present.with_columns(pl.col("_value").replace(dict(zip(values, names))))
    out = joined.group_by("cluster").len().rename({"len": "size"}).sort("cluster")
    if present.height:
        counts = present.group_by("cluster", "_value").len().pivot(on="_value", index="cluster", values="len")
        out = out.join(counts, on="cluster", how="left")
    out = out.select(pl.col("cluster").cast(pl.Int64), pl.col("size").cast(pl.Int64),
                     *[pl.col(v).fill_null(0).cast(pl.Int64) for v in names])
    matrix = out.select(names).to_numpy() if names else np.zeros((out.height, 0), dtype=np.int64)
    with_value = matrix.sum(axis=1)
    best = matrix.argmax(axis=1) if names else np.zeros(out.height, dtype=np.int64)
    return out.with_columns(
        top_value=pl.Series([values[b] if w else None for b, w in zip(best, with_value)], dtype=pl.Utf8),
        top_share=pl.Series([float(matrix[i, b] / w) if w else None for i, (b, w) in enumerate(zip(best, with_value))],
                            dtype=pl.Float64),
    )


def _natural(value: str):
    """Numbers in numeric order, then text in alphabetical order."""
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)
