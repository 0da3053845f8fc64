"""The streaming pass behind diff: per-feature document counts, value sums and top exemplar rows.

Each document gets a small integer code (which side(s) it is on, or which --by group) and a length
stratum in arrays indexed by doc_idx, so the side of a row is a positional lookup, not a join; a
compiled loop (numba) adds one to count[code, stratum, feature] and, in the same pass, sums the values
(mean where active) and keeps the strongest rows per (code, feature) (the exemplars). The rows come
from the store as Arrow batches and are never held whole: memory is one batch plus arrays of
codes × strata × d_sae.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa

from saeembed.analysis.diff_length import Sides
from saeembed.store import Store


@dataclass
class Scan:
    """What one pass over the sparse rows found, per document code (see diff / diff_by)."""

    count: np.ndarray  # [code, stratum, feature] documents where the feature fires
    total: np.ndarray  # [code, feature] sum of its values there (float64)
    top_value: np.ndarray  # [code, feature, k] strongest values, best first (-inf: none)
    top_doc: np.ndarray  # [code, feature, k] their doc_idx (-1: none); ties go to the lower doc_idx


SCAN_BATCH_ROWS = 1 << 20
SCAN_MAX_BYTES = 1 << 30  # per-code arrays of one scan (diff_by with many groups on a very wide SAE: one pass each)


def fits(n_codes: int, n_strata: int, d_sae: int, k: int) -> bool:
    """Whether one scan's arrays for n_codes codes stay within SCAN_MAX_BYTES."""
    return n_codes * d_sae * (8 * n_strata + 8 + 8 * max(k, 0)) <= SCAN_MAX_BYTES


_SCAN_KERNEL = None


def kernel():
    """The compiled loop (numba, compiled once and cached on disk; imported only when a diff runs)."""
    global _SCAN_KERNEL
    if _SCAN_KERNEL is None:
        import numba

        @numba.njit(nogil=True, cache=True)
        def scan_batch(doc, feat, val, code, stratum, count, total, top_value, top_doc, floor_value,
                       floor_doc):  # pragma: no cover - compiled
            # floor_*[c, f] is top_*[c, f, k - 1] kept apart: the test every row makes reads a small array
            # (codes x d_sae), not the k-times larger one, which only an entering row touches
            n_docs, n_feat, k = len(code), count.shape[2], top_value.shape[2]
            for r in range(len(doc)):
                d, f = doc[r], feat[r]
                if d < 0 or d >= n_docs or f < 0 or f >= n_feat:
                    continue
                c = code[d]
                if c < 0:
                    continue
                v = val[r]
                count[c, stratum[d], f] += 1
                total[c, f] += v
                if k == 0:
                    continue
                last_v, last_d = floor_value[c, f], floor_doc[c, f]
                if v > last_v or (v == last_v and d < last_d):
                    j = k - 1
                    while j > 0:
                        pv, pd = top_value[c, f, j - 1], top_doc[c, f, j - 1]
                        if v > pv or (v == pv and pd >= 0 and d < pd):
                            top_value[c, f, j], top_doc[c, f, j] = pv, pd
                            j -= 1
                        else:
                            break
                    top_value[c, f, j], top_doc[c, f, j] = v, d
                    floor_value[c, f], floor_doc[c, f] = top_value[c, f, k - 1], top_doc[c, f, k - 1]

        _SCAN_KERNEL = scan_batch
    return _SCAN_KERNEL


def scan_activations(store: Store, sae, per_corpus: dict[int, tuple[np.ndarray, np.ndarray]], n_codes: int,
                     n_strata: int, k: int) -> Scan:
    """One streaming pass over the rows of each corpus in per_corpus: {corpus_id: (code by doc_idx
    (-1: not looked at), stratum by doc_idx)}. DuckDB decodes a batch (on its threads), then the
    compiled loop counts it. (Counting on a second thread, or while DuckDB decodes the next batch,
    measured no faster on the 2-core dev box, so neither is done.)"""
    loop = kernel()
    k = max(int(k), 0)
    count = np.zeros((n_codes, n_strata, sae.d_sae), dtype=np.int64)
    total = np.zeros((n_codes, sae.d_sae), dtype=np.float64)
    top_value = np.full((n_codes, sae.d_sae, k), -np.inf, dtype=np.float32)
    top_doc = np.full((n_codes, sae.d_sae, k), -1, dtype=np.int32)
    floor_value, floor_doc = floors(top_value, top_doc)
    for cid, (code, stratum) in per_corpus.items():
        code = np.ascontiguousarray(code, dtype=np.int16)
        stratum = np.ascontiguousarray(stratum, dtype=np.int8)
        for batch in store.activation_batches(cid, sae.sae_key, SCAN_BATCH_ROWS):
            loop(_np(batch.column(0), np.int32), _np(batch.column(1), np.int32), _np(batch.column(2), np.float32),
                 code, stratum, count, total, top_value, top_doc, floor_value, floor_doc)
    return Scan(count, total, top_value, top_doc)


def floors(top_value: np.ndarray, top_doc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The k-th (weakest kept) value and doc of each (code, feature), as the loop's separate arrays."""
    k = top_value.shape[2]
    if k == 0:
        return np.zeros(top_value.shape[:2], np.float32), np.zeros(top_doc.shape[:2], np.int32)
    return np.ascontiguousarray(top_value[:, :, k - 1]), np.ascontiguousarray(top_doc[:, :, k - 1])


def _np(column: pa.Array, dtype) -> np.ndarray:
    return np.ascontiguousarray(column.to_numpy(zero_copy_only=False), dtype=dtype)


def side_counts(scan: Scan, sides: Sides, codes_a: list[int], codes_b: list[int], *, stratified: bool):
    """counts[side, stratum, feature] of documents where each feature fires, and n[side, stratum]."""
    if stratified:
        counts = np.stack([scan.count[codes_a].sum(0), scan.count[codes_b].sum(0)])
        n = np.stack([np.bincount(sides.sa, minlength=sides.n_strata), np.bincount(sides.sb, minlength=sides.n_strata)])
    else:
        counts = np.stack([scan.count[codes_a].sum((0, 1)), scan.count[codes_b].sum((0, 1))])[:, None, :]
        n = np.array([[len(sides.la)], [len(sides.lb)]])
    return counts, n.astype(np.int64)


def mean_values(scan: Scan, codes_a: list[int], codes_b: list[int], features: np.ndarray) -> pl.DataFrame:
    """Mean activation where active, per side, for the listed features (null where it never fires)."""
    features = np.asarray(features, dtype=np.int64)
    out = {"feature": pl.Series(features, dtype=pl.Int64)}
    for codes, name in ((codes_a, "mean_a"), (codes_b, "mean_b")):
        docs = scan.count[codes][:, :, features].sum((0, 1))
        total = scan.total[codes][:, features].sum(0)
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = np.where(docs > 0, total / np.maximum(docs, 1), np.nan)
        out[name] = pl.Series(mean, dtype=pl.Float64).fill_nan(None)
    return pl.DataFrame(out)


def top_rows(scan: Scan, codes: list[int], features: list[int], k: int) -> pl.DataFrame:
    """The k strongest (feature, doc_idx, value) of each listed feature over the documents of `codes`
    (value descending, then doc_idx ascending)."""
    k = max(int(k), 0)
    f = np.asarray(features, dtype=np.int64)
    if k == 0 or not len(f):
        return pl.DataFrame(schema={"feature": pl.Int64, "doc_idx": pl.Int32, "value": pl.Float32})
    values = np.concatenate([scan.top_value[c][f] for c in codes], axis=1)  # [feature, len(codes) * k]
    docs = np.concatenate([scan.top_doc[c][f] for c in codes], axis=1)
    rows = pl.DataFrame({
        "feature": np.repeat(f, values.shape[1]), "doc_idx": docs.ravel(), "value": values.ravel(),
    }).filter(pl.col("doc_idx") >= 0)
    return (rows.sort(["feature", "value", "doc_idx"], descending=[False, True, False])
            .group_by("feature", maintain_order=True).head(k))
