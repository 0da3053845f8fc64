"""Concept-correlation mining: which features fire in the same documents, and which rise or fall
with a metadata column.

Co-occurrence is counted across documents from the sparse binary embedding (X^T X over the features
with enough support, in row blocks so memory stays bounded) and scored as normalised PMI:

    npmi(i, j) = log(p_ij / (p_i p_j)) / -log(p_ij),   and -1 when i and j never co-occur.

NPMI is 1 for any two features that only ever fire together, however rare: five near-duplicate
documents make a perfect pair. So a listed pair needs support (it co-occurs in at least
max(min_pair_docs, min_support x documents), by default max(10, 0.5 %)), and pairs are ranked by
npmi_shrunk = npmi x docs / (docs + shrink_docs), which keeps strength but lets a pair seen on a
handful of documents count for less than one seen on hundreds.

A pair is *unexpected* when it co-occurs strongly although the two features mean different things:
their decoder directions are nearly orthogonal (and their labels, when both have one, are dissimilar).
Pairs with similar decoder directions are the usual split/absorbed features and are expected. The
unexpected list leaves out the pairs already shown as strongest, so the two lists never repeat each
other (the strongest list carries decoder_cosine for its own pairs).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl
import scipy.sparse as sp
from scipy import stats

from saeembed.analysis.cooccur import MAX_FEATURES, pair_counts
from saeembed.analysis.local_tokens import corpus_peaks, dominant, hints
from saeembed.analysis.selection import Selection, embedding_matrix, require_docs, select
from saeembed.config import CorrelateConfig
from saeembed.encode.probe import random_share
from saeembed.errors import InputError, SAEError
from saeembed.stats import bh, generic_rule, two_proportion_p
from saeembed.store import SAEInfo, Store


@dataclass
class CorrelateResult:
    pairs: pl.DataFrame  # strongest pairs, best npmi_shrunk first
    unexpected: pl.DataFrame  # strong pairs of dissimilar features, none of them in `pairs`
    summary: dict = field(default_factory=dict)


@dataclass
class ColumnCorrelation:
    frame: pl.DataFrame  # features that rise/fall with the column (per category when categorical)
    trend: pl.DataFrame | None  # numeric/date columns: feature frequency per bin of the column
    summary: dict = field(default_factory=dict)


def npmi_from_counts(c_ij: np.ndarray, c_i: np.ndarray, c_j: np.ndarray, n: int) -> np.ndarray:
    """NPMI for document counts; -1 where a pair never co-occurs, 1 where both fire in every document."""
    c_ij = np.asarray(c_ij, dtype=np.float64)
    p_ij, p_i, p_j = c_ij / n, np.asarray(c_i) / n, np.asarray(c_j) / n
    out = np.full(c_ij.shape, -1.0)
    pos = c_ij > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        pmi = np.log(p_ij[pos] / (p_i[pos] * p_j[pos]))
        denom = -np.log(p_ij[pos])
        out[pos] = np.where(denom > 0, pmi / np.where(denom > 0, denom, 1.0), 1.0)
    return np.clip(out, -1.0, 1.0)


def shrunk_npmi(npmi: np.ndarray, docs: np.ndarray, shrink_docs: float) -> np.ndarray:
    """NPMI pulled toward 0 for pairs seen on few documents: npmi x docs / (docs + shrink_docs)."""
    docs = np.asarray(docs, dtype=np.float64)
    return np.asarray(npmi, dtype=np.float64) * docs / (docs + max(float(shrink_docs), 0.0))


def correlate(store: Store, corpus: str, *, where: str | None = None, sae: str | None = None,
              sae_weights: str | None = None, config: CorrelateConfig | None = None) -> CorrelateResult:
    """Feature × feature co-occurrence over a corpus (or a filtered slice of it)."""
    cfg = config or CorrelateConfig()
    sel = require_docs(select(store, corpus, where=where, sae=sae))
    n = sel.n_docs
    pair_min = cfg.pair_min_docs(n)
    doc, feature = _active_pairs(store, sel)
    counts = np.bincount(feature, minlength=sel.sae.d_sae)
    # a feature on fewer documents than a pair needs can be in no listed pair
    supported = (counts >= max(cfg.min_docs, 1)) & (counts >= cfg.min_support * n) & (counts >= pair_min)
    share = random_share(store, sel.sae, np.arange(len(counts)))
    generic, _ = generic_rule(counts / n, share, cfg.generic_freq, cfg.random_freq)
    keep = np.flatnonzero(supported & (cfg.keep_generic | ~generic))
    capped = len(keep) > MAX_FEATURES
    if capped:  # the accumulator is dense over the kept features: keep the most frequent
        keep = np.sort(keep[np.argsort(-counts[keep], kind="stable")[:MAX_FEATURES]])
    acc = pair_counts(doc, feature, n, keep)
    del doc, feature
    listed = max(cfg.top * 20, 1000)  # only the strongest pairs are ever shown or checked for surprise
    i, j, cij, npmi, n_pairs = strongest_pairs(acc, keep, counts, n, pair_min, listed, shrink_docs=cfg.shrink_docs)
    del acc
    pairs = pl.DataFrame({
        "feature_a": i.astype(np.int64), "feature_b": j.astype(np.int64),
        "npmi_shrunk": shrunk_npmi(npmi, cij, cfg.shrink_docs), "npmi": npmi,
        "support": cij / n, "docs": cij,
        "freq_a": counts[i] / n, "freq_b": counts[j] / n,
    }).sort(["npmi_shrunk", "docs", "feature_a", "feature_b"], descending=[True, True, False, False])
    top = pairs.head(cfg.top)
    rest = pairs.slice(cfg.top).filter(pl.col("npmi_shrunk") >= cfg.unexpected_npmi)
    candidates = pl.concat([top, rest])
    similarity, note = _pair_similarity(store, sel.sae, candidates, sae_weights)
    top = top.join(similarity, on=["feature_a", "feature_b"], how="left")
    unexpected = _unexpected(rest.join(similarity, on=["feature_a", "feature_b"], how="left"), cfg)
    peaks, same_token = {}, 0
    if where is None:  # the features' peak tokens, from their stored exemplars (a slice's are not stored)
        unexpected = unexpected.head(3 * cfg.top)
        peaks = corpus_peaks(store, sel.sae.sae_key, corpus, sorted(set(_features(top)) | set(_features(unexpected))))
        unexpected, same_token = _apart(unexpected, peaks)  # same token here: no surprise together
    top = _with_labels(store, sel.sae, top, peaks)
    unexpected = _with_labels(store, sel.sae, unexpected.head(cfg.top), peaks)
    summary = {
        "corpus": sel.name, "n_docs": n, "sae": sel.sae.sae_hash,
        "features_with_support": int(len(keep)), "pairs_counted": int(n_pairs),
        "features_capped": bool(capped),
        "generic_excluded": 0 if cfg.keep_generic else int((supported & generic).sum()),
        "min_support": cfg.min_support, "min_docs": cfg.min_docs, "min_pair_docs": cfg.min_pair_docs,
        "pair_min_docs": pair_min, "shrink_docs": cfg.shrink_docs,
        "similarity": note, "unexpected_same_token": same_token,
    }
    return CorrelateResult(top, unexpected, summary)


def _features(pairs: pl.DataFrame) -> list[int]:
    return sorted(set(pairs["feature_a"].to_list()) | set(pairs["feature_b"].to_list())) if pairs.height else []


def _apart(pairs: pl.DataFrame, peaks: dict[int, list]) -> tuple[pl.DataFrame, int]:
    """The pairs whose two features do not peak on the same token (most of their strongest documents,
    saeembed.analysis.local_tokens), and how many were left out."""
    peak = {f: dominant(tokens) for f, tokens in peaks.items()}
    same = [peak.get(a) is not None and peak.get(a) == peak.get(b)
            for a, b in zip(pairs["feature_a"].to_list(), pairs["feature_b"].to_list())]
    return pairs.filter(~pl.Series(same, dtype=pl.Boolean)), sum(same)


def _unexpected(candidates: pl.DataFrame, cfg: CorrelateConfig) -> pl.DataFrame:
    """The candidates whose decoder directions (and labels, when both have one) are dissimilar; none
    when neither is known (a guess would only repeat the strongest pairs)."""
    out = candidates
    if "decoder_cosine" in out.columns:
        out = out.filter(pl.col("decoder_cosine").abs() < cfg.unexpected_cosine)
    if "label_similarity" in out.columns:
        out = out.filter(pl.col("label_similarity").is_null()
                         | (pl.col("label_similarity") < cfg.unexpected_label_similarity))
    if "decoder_cosine" not in out.columns and "label_similarity" not in out.columns:
        out = out.clear()
    return out


def strongest_pairs(acc: np.ndarray, keep: np.ndarray, counts: np.ndarray, n: int, min_docs: int, listed: int,
                    rows_per_block: int = 256, shrink_docs: float = 0.0):
    """The `listed` pairs with the highest shrunk NPMI (shrunk_npmi; plain NPMI when shrink_docs is 0)
    among those co-occurring in >= min_docs documents, scanning the accumulator a block of rows at a
    time so memory stays small: feature ids i, j, joint docs, NPMI (not shrunk), and how many qualified."""
    best = [np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0), np.empty(0)]
    total = 0
    for r0 in range(0, acc.shape[0], rows_per_block):
        block = acc[r0 : r0 + rows_per_block]
        bi, bj = np.nonzero(block >= min_docs)
        if not len(bi):
            continue
        total += len(bi)
        c = block[bi, bj].astype(np.int64)
        fi, fj = keep[bi + r0], keep[bj]
        v = npmi_from_counts(c, counts[fi], counts[fj], n)
        merged = [np.concatenate([m, x]) for m, x in zip(best, (fi, fj, c, v, shrunk_npmi(v, c, shrink_docs)))]
        if len(merged[4]) > listed:
            top = np.argpartition(-merged[4], listed)[:listed]
            merged = [m[top] for m in merged]
        best = merged
    return best[0], best[1], best[2], best[3], total


def _active_pairs(store: Store, sel: Selection) -> tuple[np.ndarray, np.ndarray]:
    """(row in the selection, feature) for every active entry: two int arrays, no values, no matrix."""
    doc, feature = store.active_pairs(sel.corpus.corpus_id, sel.sae.sae_key)
    if sel.n_docs == sel.corpus.n_docs and np.array_equal(sel.doc_idx, np.arange(sel.n_docs)):
        return doc, feature
    position = np.full(sel.corpus.n_docs, -1, dtype=np.int64)
    position[sel.doc_idx] = np.arange(sel.n_docs)
    row = position[doc]
    inside = row >= 0
    return row[inside], feature[inside]


def _with_labels(store: Store, sae: SAEInfo, frame: pl.DataFrame, peaks: dict[int, list]) -> pl.DataFrame:
    """Each side's label and its local hint from its peak tokens (saeembed.analysis.local_tokens)."""
    feats = _features(frame)
    labels = store.labels(sae.sae_key, feats).select("feature", "label")
    named = dict(zip(labels["feature"].to_list(), labels["label"].to_list()))
    found = hints(peaks, {f: named.get(f) for f in feats})
    labels = pl.DataFrame({"feature": pl.Series(feats, dtype=pl.Int64)}).join(
        labels.with_columns(pl.col("feature").cast(pl.Int64)), on="feature", how="left").with_columns(
        here=pl.Series([found.get(f) for f in feats], dtype=pl.Utf8))
    out = frame
    for side in ("a", "b"):
        out = out.join(labels.rename({"feature": f"feature_{side}", "label": f"label_{side}", "here": f"here_{side}"}),
                       on=f"feature_{side}", how="left")
    first = ["feature_a", "label_a", "here_a", "feature_b", "label_b", "here_b", "npmi_shrunk", "npmi", "support", "docs"]
    return out.select(first + [c for c in out.columns if c not in first])


def _pair_similarity(store: Store, sae: SAEInfo, pairs: pl.DataFrame, weights: str | None):
    """decoder_cosine (when the SAE weights can be loaded) and label_similarity (when labelled)."""
    out = pairs.select("feature_a", "feature_b")
    notes = []
    try:
        w = load_decoder(store, sae, weights)
    except SAEError as e:
        w = None
        notes.append(f"decoder directions unavailable ({e}); pass --sae-weights PATH")
    if w is not None and pairs.height:
        a, b = pairs["feature_a"].to_numpy(), pairs["feature_b"].to_numpy()
        out = out.with_columns(decoder_cosine=pl.Series(np.einsum("ij,ij->i", w[a], w[b]).astype(np.float64)))
        notes.append("decoder cosine")
    elif w is not None:
        out = out.with_columns(decoder_cosine=pl.Series([], dtype=pl.Float64))
    feats = sorted(set(pairs["feature_a"].to_list()) | set(pairs["feature_b"].to_list()))
    labels = store.labels(sae.sae_key, feats)
    if labels.height:
        from saeembed.encode.dense import embed_texts

        vec = dict(zip(labels["feature"].to_list(), embed_texts(labels["label"].to_list())))
        sims = [float(vec[x] @ vec[y]) if x in vec and y in vec else None
                for x, y in zip(pairs["feature_a"].to_list(), pairs["feature_b"].to_list())]
        out = out.with_columns(label_similarity=pl.Series(sims, dtype=pl.Float64))
        notes.append("label similarity")
    return out, ", ".join(notes) or "none"


def load_decoder(store: Store, sae: SAEInfo, weights: str | None = None) -> np.ndarray:
    """Unit-norm decoder directions [d_sae, d_in] of a stored SAE, from `weights`, its recorded source,
    or the embedded default SAE; checked against the stored identity."""
    from saeembed.sae.formats import load_sae

    candidates = [weights] if weights else [sae.source, "default"]
    errors = []
    for source in candidates:
        if not source:
            continue
        try:
            if source == "default":
                from saeembed.sae.default import load_default_sae

                obj = load_default_sae()
            else:
                obj = load_sae(source)
        except Exception as e:  # noqa: BLE001 - any failure means "not here"; say why below
            errors.append(f"{source}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
            continue
        if obj.identity != sae.sae_hash:
            errors.append(f"{source} holds SAE {obj.identity[:16]}, not {sae.sae_hash}")
            continue
        w = obj.W_dec.detach().float().cpu().numpy()
        return w / np.maximum(np.linalg.norm(w, axis=1, keepdims=True), 1e-12)
    raise SAEError("; ".join(errors) or f"no weights recorded for SAE {sae.sae_hash}")


# --- features against a metadata column -----------------------------------------------------------


def correlate_with_column(store: Store, corpus: str, column: str, *, where: str | None = None,
                          sae: str | None = None, top: int = 20, min_docs: int = 5, bins: int = 5) -> ColumnCorrelation:
    """Which features rise or fall with a metadata column.

    Categorical column: per category and feature, frequency inside vs outside, lift, NPMI with the
    category, and Fisher/z-test p with BH correction. Numeric or date column: Spearman rank correlation
    of the feature's activation (0 when inactive) with the column, and a trend table of the feature's
    frequency per quantile bin (per value when there are few)."""
    sel = require_docs(select(store, corpus, where=where, sae=sae))
    table = store.doc_table(sel.corpus, sel.sae)
    if column not in table.columns:
        raise InputError(f"corpus {corpus!r} has no column {column!r}; columns: {', '.join(table.columns)}")
    table = table.filter(pl.col("doc_idx").is_in(sel.doc_idx.tolist())).sort("doc_idx")
    values = table[column]
    present = values.is_not_null().to_numpy()
    if present.sum() < 2:
        raise InputError(f"column {column!r} has fewer than 2 non-null values in {sel.name!r}")
    sel = Selection(sel.corpus, sel.sae, table["doc_idx"].to_numpy()[present].astype(np.int64), sel.name)
    values = _as_dates(values.filter(pl.Series(present)))
    x = embedding_matrix(store, sel)
    dtype = values.dtype
    if dtype.is_numeric() and dtype != pl.Boolean and values.n_unique() > 2 or dtype.is_temporal():
        result = _numeric_trend(store, sel, x, values, top=top, min_docs=min_docs, bins=bins)
    else:
        result = _categorical(store, sel, x, values.cast(pl.Utf8), top=top, min_docs=min_docs)
    result.summary.update({"corpus": sel.name, "column": column, "n_docs": sel.n_docs, "sae": sel.sae.sae_hash})
    return result


def _as_dates(values: pl.Series) -> pl.Series:
    """A text column whose every value reads as a date or datetime is treated as one."""
    if values.dtype != pl.Utf8:
        return values
    for parse in (lambda v: v.str.to_date(strict=False), lambda v: v.str.to_datetime(strict=False)):
        try:
            parsed = parse(values)
        except pl.exceptions.PolarsError:
            continue
        if parsed.null_count() == 0:
            return parsed
    return values


def _categorical(store: Store, sel: Selection, x: sp.csr_matrix, values: pl.Series, *, top: int, min_docs: int):
    n = sel.n_docs
    xb = (x > 0).astype(np.int64).tocsr()
    total = np.asarray(xb.sum(0)).ravel()
    feats = np.flatnonzero(total >= min_docs)
    cats = values.to_numpy()
    rows = []
    distinct = sorted(set(cats.tolist()))
    if len(distinct) > 100:
        raise InputError(f"the column has {len(distinct)} distinct values; as a category it needs at most 100 "
                         "(numbers and dates are handled as trends)")
    for cat in distinct:
        mask = cats == cat
        n_in = int(mask.sum())
        if n_in < min_docs or n_in == n:  # too small a category says nothing
            continue
        c_in = np.asarray(xb[mask].sum(0)).ravel()[feats]
        c_out = total[feats] - c_in
        p = two_proportion_p(c_in, n_in, c_out, n - n_in)
        f_in = c_in / n_in
        rows.append(pl.DataFrame({
            "category": [str(cat)] * len(feats), "feature": feats.astype(np.int64),
            "freq_in": f_in, "freq_out": c_out / (n - n_in),
            "lift": (c_in + 0.5) / (n_in + 1) / ((total[feats] + 0.5) / (n + 1)),
            "npmi": npmi_from_counts(c_in, total[feats], np.full(len(feats), n_in), n),
            "p_value": p, "docs_in": c_in.astype(np.int64), "n_in": n_in,
        }))
    if not rows:
        raise InputError(f"no category of the column has at least {min_docs} documents (and not all); nothing to compare")
    frame = pl.concat(rows)
    frame = frame.with_columns(q_value=pl.Series(bh(frame["p_value"].to_numpy())))
    frame = (
        frame.with_columns(diff=pl.col("freq_in") - pl.col("freq_out"))
        .sort(["category", "diff", "feature"], descending=[False, True, False])
        .group_by("category", maintain_order=True).head(top)
    )
    labels = store.labels(sel.sae.sae_key, frame["feature"].unique().to_list()).select("feature", "label")
    frame = frame.join(labels, on="feature", how="left").select(
        "category", "feature", "label", "freq_in", "freq_out", "diff", "lift", "npmi", "p_value", "q_value",
        "docs_in", "n_in")
    return ColumnCorrelation(frame, None, {"kind": "categorical", "categories": int(frame["category"].n_unique())})


def _numeric_trend(store: Store, sel: Selection, x: sp.csr_matrix, values: pl.Series, *, top: int,
                   min_docs: int, bins: int):
    n = sel.n_docs
    numeric = values.cast(pl.Int64) if values.dtype.is_temporal() else values.cast(pl.Float64)
    v = numeric.to_numpy().astype(np.float64)
    rv = stats.rankdata(v)
    xc = x.tocsc()
    total = np.diff(xc.indptr)
    feats = np.flatnonzero(total >= min_docs)
    rho = np.zeros(len(feats))
    rv_c = rv - rv.mean()
    for k, f in enumerate(feats):
        lo, hi = xc.indptr[f], xc.indptr[f + 1]
        rows, vals = xc.indices[lo:hi], xc.data[lo:hi]
        # ranks of the activation with zeros tied at the bottom, computed sparsely
        n0 = n - len(rows)
        r_active = n0 + stats.rankdata(vals)
        r_zero = (n0 + 1) / 2.0
        mean_r = (n + 1) / 2.0
        cov = r_zero * rv_c.sum() - r_zero * rv_c[rows].sum() + (r_active * rv_c[rows]).sum()
        var_f = n0 * (r_zero - mean_r) ** 2 + ((r_active - mean_r) ** 2).sum()
        denom = np.sqrt(var_f * (rv_c**2).sum())
        rho[k] = cov / denom if denom > 0 else 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        t = rho * np.sqrt((n - 2) / np.maximum(1 - rho**2, 1e-300))
    p = 2 * stats.t.sf(np.abs(t), n - 2)
    frame = pl.DataFrame({"feature": feats.astype(np.int64), "spearman": rho, "p_value": p,
                          "docs": total[feats].astype(np.int64)})
    frame = frame.with_columns(q_value=pl.Series(bh(p) if len(p) else [], dtype=pl.Float64))
    frame = frame.with_columns(direction=pl.when(pl.col("spearman") >= 0).then(pl.lit("rises")).otherwise(pl.lit("falls")))
    frame = frame.sort([pl.col("spearman").abs(), pl.col("feature")], descending=[True, False]).head(top)
    # trend table: frequency per bin (per value when few distinct values)
    distinct = np.unique(v)
    if len(distinct) <= max(bins, 12):
        bin_of = np.searchsorted(distinct, v)
        names = [str(values.filter(pl.Series(v == d))[0]) for d in distinct]
    else:
        edges = np.unique(np.quantile(v, np.linspace(0, 1, bins + 1)[1:-1]))
        bin_of = np.searchsorted(edges, v, side="right")
        names = []
        for b in range(len(edges) + 1):
            in_bin = values.filter(pl.Series(bin_of == b))
            names.append(f"{in_bin.min()} … {in_bin.max()}" if in_bin.len() else "")
    trend_rows = []
    xb = (xc[:, frame["feature"].to_numpy()] > 0).tocsr()
    for b, name in enumerate(names):
        mask = bin_of == b
        if not mask.any():
            continue
        freq = np.asarray(xb[mask].sum(0)).ravel() / mask.sum()
        trend_rows.append({"bin": name, "n_docs": int(mask.sum()),
                           **{f"f{f}": float(q) for f, q in zip(frame["feature"].to_list(), freq)}})
    trend = pl.DataFrame(trend_rows)
    labels = store.labels(sel.sae.sae_key, frame["feature"].to_list()).select("feature", "label")
    frame = frame.join(labels, on="feature", how="left").select(
        "feature", "label", "spearman", "direction", "p_value", "q_value", "docs")
    return ColumnCorrelation(frame, trend, {"kind": "numeric", "bins": len(names)})
