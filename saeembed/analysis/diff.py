"""Dataset diffing: which features fire more often in side A than in side B, and how sure we are.

A side is a Selection (a corpus, or a filtered slice of one). Per feature we count the documents where
it fires on each side (never a dense matrix), then test the two proportions:
a two-proportion z-test, Fisher's exact test when an expected cell is below 5, or McNemar's test
when A and B are paired documents (same prompt). p-values are corrected with Benjamini–Hochberg.

Confounds are reported, not hidden:
- Length: max-pooling makes long documents light up more features. The summary states the length
  difference; the length-controlled ranking stratifies documents into token-length bins (pooled
  quantiles) and uses the Cochran–Mantel–Haenszel test and a stratum-weighted difference.
- Generic features (firing on nearly every document, or on random-token text as measured once per
  SAE by the encode's random probe) are flagged and left out unless keep_generic.

Counting is one streaming pass over the corpus's sparse rows (doc_idx, feature, value), fetched from
DuckDB as Arrow batches (the `activations` view, so Parquet shards are read too). Each document gets a
small integer code (which side(s) it is on, or which --by group) and a length stratum in arrays indexed
by doc_idx, so the side of a row is a positional lookup, not a join; a compiled loop (numba) adds one
to counts[code, stratum, feature] and, in the same pass, sums the values (mean where active) and keeps
the strongest rows per (code, feature) (the exemplars). Memory: the rows are never held whole, only
one batch at a time plus arrays of codes × strata × d_sae.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl
import pyarrow as pa
from scipy import special

from saeembed.analysis.selection import Selection, require_docs, select, select_many
from saeembed.encode.probe import PROBE
from saeembed.errors import InputError, StoreError
from saeembed.filters import parse_filter
from saeembed.store import Store
from saeembed.textwindow import snippet


@dataclass
class DiffConfig:
    """How a diff is computed. The CLI reads these defaults."""

    length_control: str = "auto"  # on | off | auto (on when the sides' lengths differ clearly)
    length_bins: int = 5
    keep_generic: bool = False
    generic_freq: float = 0.9  # fires on at least this share of all documents -> generic
    random_freq: float = 0.9  # fires on at least this share of random-token texts -> generic
    min_docs: int = 1  # a feature must fire in at least this many documents (both sides together)
    exemplars: int = 1  # exemplar snippets per side per feature in the output
    snippet_width: int = 50
    top: int | None = 50  # rows returned (None = all)


@dataclass
class DiffResult:
    frame: pl.DataFrame  # one row per feature, best first
    summary: dict = field(default_factory=dict)


# --- entry points ---------------------------------------------------------------------------------


def diff_corpora(store: Store, a: str, b: str, *, where_a: str | None = None, where_b: str | None = None,
                 sae: str | None = None, paired_on: str | None = None, config: DiffConfig | None = None) -> DiffResult:
    """Corpus A against corpus B (each optionally filtered)."""
    sa, sb = select(store, a, where=where_a, sae=sae), select(store, b, where=where_b, sae=sae)
    return diff(store, sa, sb, paired_on=paired_on, config=config)


def diff_slices(store: Store, corpus: str, where: str, vs: str | None = None, *, sae: str | None = None,
                paired_on: str | None = None, config: DiffConfig | None = None) -> DiffResult:
    """Two filtered slices of one corpus; without `vs`, the slice against the rest of the corpus."""
    sa, other = select_many(store, corpus, [where, vs], sae=sae)  # vs None: the whole corpus
    if vs is not None:
        sb = other
    else:
        rest = _rest(other.doc_idx, sa.doc_idx)
        sb = Selection(other.corpus, other.sae, rest, f"{corpus} not ({where})")
    return diff(store, sa, sb, paired_on=paired_on, config=config)


def diff_by(store: Store, corpus: str, column: str, *, where: str | None = None, sae: str | None = None,
            config: DiffConfig | None = None, max_groups: int = 50) -> dict[str, DiffResult]:
    """Each value of a metadata column against the rest of the corpus (e.g. --by generator).
    One pass over the sparse rows counts every group at once (each group's rest is the other groups)."""
    from saeembed.analysis.selection import filter_columns, select_table

    cfg = _check_config(config)
    info = store.corpus(corpus)
    columns = filter_columns(info, store)
    if where:
        parse_filter(where, columns)  # a bad filter is reported first
    allowed = ["doc_idx", *columns]
    if column not in allowed:
        raise InputError(f"corpus {corpus!r} has no column {column!r}; columns: {', '.join(allowed)}")
    base, table = select_table(store, corpus, where=where, sae=sae, columns=[column])
    groups = table.group_by(column).agg(pl.col("doc_idx")).sort(column, nulls_last=True)
    if groups.height > max_groups:
        raise InputError(f"column {column!r} has {groups.height} distinct values; --by needs at most {max_groups}")
    if groups.height < 2:
        raise InputError(f"column {column!r} has a single value; nothing to compare")
    pairs = []
    for i in range(groups.height):
        value = groups[column][i]
        a_idx = np.sort(groups["doc_idx"][i].to_numpy().astype(np.int64))
        b_idx = _rest(base.doc_idx, a_idx)
        label = "null" if value is None else str(value)
        pairs.append((label, Selection(base.corpus, base.sae, a_idx, f"{column} = {label}"),
                      Selection(base.corpus, base.sae, b_idx, f"{column} != {label}")))
    for _, sa, sb in pairs:
        require_docs(sa), require_docs(sb)
    # Every group's diff pools the same documents (the group and its rest = the base selection), so
    # the length strata are the same for all: compute them once, and count all groups in one pass.
    tokens = _tokens(store, base.sae.sae_key, base.corpus.corpus_id, base.doc_idx)
    stratum_of, n_strata = _strata(tokens, [base.doc_idx], cfg.length_bins)
    n_groups = len(pairs)
    if n_groups >= 2**15 or not _fits(n_groups, n_strata, base.sae.d_sae, cfg.exemplars):  # one pass per group
        return {label: diff(store, sa, sb, config=cfg) for label, sa, sb in pairs}
    code = np.full(len(stratum_of), -1, dtype=np.int16)
    for g, (_, sa, _) in enumerate(pairs):
        code[sa.doc_idx] = g
    scan = _scan(store, base.sae, {base.corpus.corpus_id: (code, stratum_of)}, n_groups, n_strata, cfg.exemplars)
    out = {}
    for g, (label, sa, sb) in enumerate(pairs):
        sides = _Sides(tokens[sa.doc_idx], tokens[sb.doc_idx], stratum_of[sa.doc_idx], stratum_of[sb.doc_idx], n_strata)
        rest = [h for h in range(n_groups) if h != g]
        out[label] = _diff_scanned(store, sa, sb, sides, scan, [g], rest, cfg)
    return out


def _rest(whole: np.ndarray, part: np.ndarray) -> np.ndarray:
    """np.setdiff1d(whole, part) for sorted unique doc_idx, by a mask (no sort)."""
    if not len(whole):
        return whole.copy()
    mark = np.zeros(int(max(whole.max(), part.max(initial=0))) + 1, dtype=bool)
    mark[part] = True
    return whole[~mark[whole]]


# --- the computation --------------------------------------------------------------------------------


def _check_config(config: DiffConfig | None) -> DiffConfig:
    cfg = config or DiffConfig()
    if cfg.length_control not in ("on", "off", "auto"):
        raise InputError(f"length control must be on, off or auto, not {cfg.length_control!r}")
    return cfg


def diff(store: Store, a: Selection, b: Selection, *, paired_on: str | None = None,
         config: DiffConfig | None = None) -> DiffResult:
    cfg = _check_config(config)
    if a.sae.sae_key != b.sae.sae_key:
        raise StoreError(f"{a.name!r} and {b.name!r} are encoded with different SAEs ({a.sae.sae_hash} vs "
                         f"{b.sae.sae_hash}); encode both with the same SAE to compare them")
    require_docs(a), require_docs(b)
    n_pairs = None
    if paired_on:
        a, b, n_pairs = _pair(store, a, b, paired_on)
    sides = _side_table(store, a, b, cfg.length_bins)
    if a.corpus.corpus_id == b.corpus.corpus_id:
        # codes 0: only in A, 1: only in B, 2: in both (slices may overlap; such a document counts on both sides)
        size = int(max(a.doc_idx.max(), b.doc_idx.max())) + 1
        member = np.zeros(size, dtype=np.int16)
        member[a.doc_idx] = 1
        member[b.doc_idx] |= 2
        stratum = np.zeros(size, dtype=np.int8)
        stratum[a.doc_idx], stratum[b.doc_idx] = sides.sa, sides.sb
        per_corpus = {a.corpus.corpus_id: (member - 1, stratum)}
        codes_a, codes_b, n_codes = [0, 2], [1, 2], 3
    else:
        per_corpus = {}
        for code, (sel, st) in enumerate(((a, sides.sa), (b, sides.sb))):
            size = int(sel.doc_idx.max()) + 1
            c, s = np.full(size, -1, dtype=np.int16), np.zeros(size, dtype=np.int8)
            c[sel.doc_idx], s[sel.doc_idx] = code, st
            per_corpus[sel.corpus.corpus_id] = (c, s)
        codes_a, codes_b, n_codes = [0], [1], 2
    scan = _scan(store, a.sae, per_corpus, n_codes, sides.n_strata, cfg.exemplars)
    return _diff_scanned(store, a, b, sides, scan, codes_a, codes_b, cfg, paired_on=paired_on, n_pairs=n_pairs)


def _diff_scanned(store: Store, a: Selection, b: Selection, sides: "_Sides", scan: "_Scan", codes_a: list[int],
                  codes_b: list[int], cfg: DiffConfig, *, paired_on: str | None = None,
                  n_pairs: int | None = None) -> DiffResult:
    """The statistics and the table, from the counts of one scan (codes_a/codes_b: A's and B's codes)."""
    lengths = _length_summary(sides)
    use_length = cfg.length_control == "on" or (cfg.length_control == "auto" and lengths["differ"] and not paired_on)
    counts, n = _counts(scan, sides, codes_a, codes_b, stratified=use_length)
    ca, cb = counts[0].sum(0), counts[1].sum(0)
    na, nb = int(n[0].sum()), int(n[1].sum())
    observed = np.flatnonzero(ca + cb >= max(cfg.min_docs, 1))
    ca, cb = ca[observed], cb[observed]
    fa, fb = ca / na, cb / nb

    p_raw = _two_proportion_p(ca, na, cb, nb)
    if use_length:
        diff_adj, p_adj = _cmh(counts[0][:, observed], counts[1][:, observed], n[0], n[1])
    else:  # not computed: lengths are comparable (or control is off), so the raw numbers stand
        diff_adj = p_adj = np.full(len(observed), np.nan)
    if paired_on:
        p_pair = _mcnemar(store, a, b, observed)
        p_main, effect, test = p_pair, fa - fb, "mcnemar"
    elif use_length:
        p_main, effect, test = p_adj, diff_adj, "cmh-length-strata"
    else:
        p_main, effect, test = p_raw, fa - fb, "two-proportion/fisher"

    generic, reasons, probe_state = _generic(store, a, observed, (ca + cb) / (na + nb), cfg)
    frame = pl.DataFrame({
        "feature": observed.astype(np.int64),
        "freq_a": fa, "freq_b": fb,
        "docs_a": ca.astype(np.int64), "docs_b": cb.astype(np.int64),
        "diff": fa - fb,
        "ratio": ((ca + 0.5) / (na + 1)) / ((cb + 0.5) / (nb + 1)),
        "diff_adj": diff_adj,
        "p_raw": p_raw, "p_adj": p_adj,
        "p_value": p_main,
        "effect": effect,
        "generic": generic, "generic_reason": reasons,
    })
    excluded = int(frame["generic"].sum())
    if not cfg.keep_generic:
        frame = frame.filter(~pl.col("generic"))
    # BH over every feature tested (after generic features are set aside, as they are not reported).
    frame = frame.with_columns(
        q_value=pl.Series(_bh(frame["p_value"].to_numpy()) if frame.height else [], dtype=pl.Float64),
        q_raw=pl.Series(_bh(frame["p_raw"].to_numpy()) if frame.height else [], dtype=pl.Float64),
        q_adj=pl.Series(_bh(frame["p_adj"].to_numpy()) if frame.height and use_length
                        else np.full(frame.height, np.nan), dtype=pl.Float64),
    )
    frame = (
        frame.with_columns(more_in=pl.when(pl.col("effect") > 0).then(pl.lit("A"))
                           .when(pl.col("effect") < 0).then(pl.lit("B")).otherwise(pl.lit("=")))
        .sort([pl.col("effect").abs(), pl.col("p_value"), pl.col("feature")], descending=[True, False, False])
    )
    if cfg.top is not None:
        frame = frame.head(cfg.top)
    frame = frame.with_columns(pl.col("diff_adj", "p_adj", "q_adj").fill_nan(None))  # null = not computed
    frame = frame.join(_mean_values(scan, codes_a, codes_b, frame["feature"].to_numpy()), on="feature", how="left")
    frame = _annotate(store, a, b, frame, cfg, scan, codes_a, codes_b)
    summary = {
        "a": a.name, "b": b.name, "n_a": na, "n_b": nb,
        "sae": a.sae.sae_hash, "test": test,
        "length_controlled": bool(use_length),
        "length": lengths["table"],
        "length_note": lengths["note"],
        "features_tested": int(len(observed)),
        "generic_excluded": 0 if cfg.keep_generic else excluded,
        "random_probe": probe_state,
        "significant_q05": int((frame["q_value"] <= 0.05).sum()) if frame.height else 0,
    }
    if paired_on:
        summary["paired_on"] = paired_on
        summary["pairs"] = n_pairs
    return DiffResult(frame, summary)


@dataclass
class _Sides:
    """Per document of A and of B (in selection order): token length and length stratum."""

    la: np.ndarray
    lb: np.ndarray
    sa: np.ndarray
    sb: np.ndarray
    n_strata: int  # 1 + the highest stratum present


def _tokens(store: Store, sae_key: int, corpus_id: int, doc_idx: np.ndarray) -> np.ndarray:
    """n_tokens by doc_idx (0 for a document this SAE has not encoded), covering every doc_idx given."""
    rows = store.con.sql(
        "SELECT doc_idx, n_tokens FROM encoded_docs WHERE sae_key = ? AND corpus_id = ?", params=[sae_key, corpus_id]
    ).fetchnumpy()
    doc = np.asarray(rows["doc_idx"], dtype=np.int64)
    size = int(max(doc.max(initial=-1), doc_idx.max(initial=-1))) + 1
    tokens = np.zeros(size, dtype=np.int32)
    tokens[doc] = rows["n_tokens"]
    return tokens


def _edges(loglen: np.ndarray, bins: int) -> np.ndarray:
    """Stratum boundaries: pooled quantiles of log(1 + n_tokens) (a document on both sides counts twice)."""
    return np.unique(np.quantile(loglen, np.linspace(0, 1, bins + 1)[1:-1])) if bins > 1 else np.array([])


def _strata(tokens: np.ndarray, parts: list[np.ndarray], bins: int) -> tuple[np.ndarray, int]:
    """Length strata over the documents of `parts`: stratum by doc_idx, and 1 + the highest present."""
    loglen = np.log1p(np.concatenate([tokens[p] for p in parts]).astype(np.float64))
    edges = _edges(loglen, bins)
    stratum = np.searchsorted(edges, np.log1p(tokens.astype(np.float64)), side="right").astype(np.int8)
    return stratum, int(np.searchsorted(edges, loglen, side="right").max()) + 1


def _side_table(store: Store, a: Selection, b: Selection, bins: int) -> _Sides:
    """Token lengths and strata of both sides' documents."""
    toks = {}
    for sel in (a, b):
        doc = np.concatenate([s.doc_idx for s in (a, b) if s.corpus.corpus_id == sel.corpus.corpus_id])
        if sel.corpus.corpus_id not in toks:
            toks[sel.corpus.corpus_id] = _tokens(store, a.sae.sae_key, sel.corpus.corpus_id, doc)
    la, lb = toks[a.corpus.corpus_id][a.doc_idx], toks[b.corpus.corpus_id][b.doc_idx]
    loglen = np.log1p(np.concatenate([la, lb]).astype(np.float64))
    stratum = np.searchsorted(_edges(loglen, bins), loglen, side="right").astype(np.int8)
    return _Sides(la, lb, stratum[: len(la)], stratum[len(la):], int(stratum.max()) + 1)


def _length_summary(sides: _Sides) -> dict:
    la, lb = sides.la, sides.lb
    med_a, med_b = float(np.median(la)), float(np.median(lb))
    p = _mann_whitney_p(la, lb) if len(la) and len(lb) and (la.std() or lb.std() or la[0] != lb[0]) else 1.0
    ratio = (med_a + 1) / (med_b + 1)
    differ = p < 0.01 and not (1 / 1.2 <= ratio <= 1.2)
    note = (f"A's documents are {ratio:.2f}× as long as B's (median {med_a:.0f} vs {med_b:.0f} tokens, "
            f"Mann–Whitney p = {p:.2g})")
    note += ("; longer documents fire more features under max-pooling, so ranking is length-controlled"
             if differ else "; lengths are comparable")
    return {"differ": differ, "note": note, "table": {
        "median_tokens_a": med_a, "median_tokens_b": med_b, "mean_tokens_a": float(la.mean()),
        "mean_tokens_b": float(lb.mean()), "ratio": ratio, "p_value": p}}


# --- the scan -------------------------------------------------------------------------------------


@dataclass
class _Scan:
    """What one pass over the sparse rows found, per document code (see diff / diff_by)."""

    count: np.ndarray  # [code, stratum, feature] documents where the feature fires
    total: np.ndarray  # [code, feature] sum of its values there (float64)
    top_value: np.ndarray  # [code, feature, k] strongest values, best first (-inf: none)
    top_doc: np.ndarray  # [code, feature, k] their doc_idx (-1: none); ties go to the lower doc_idx


SCAN_BATCH_ROWS = 1 << 20
SCAN_MAX_BYTES = 1 << 30  # per-code arrays of one scan (diff_by with many groups on a very wide SAE: one pass each)


def _fits(n_codes: int, n_strata: int, d_sae: int, k: int) -> bool:
    return n_codes * d_sae * (8 * n_strata + 8 + 8 * max(k, 0)) <= SCAN_MAX_BYTES


_SCAN_KERNEL = None


def _kernel():
    """The compiled loop (numba, compiled once and cached on disk; imported only when a diff runs)."""
    global _SCAN_KERNEL
    if _SCAN_KERNEL is None:
        import numba

        @numba.njit(nogil=True, cache=True)
        def scan_batch(doc, feat, val, code, stratum, count, total, top_value, top_doc):  # pragma: no cover - compiled
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
                last_v, last_d = top_value[c, f, k - 1], top_doc[c, f, k - 1]
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

        _SCAN_KERNEL = scan_batch
    return _SCAN_KERNEL


def _scan(store: Store, sae, per_corpus: dict[int, tuple[np.ndarray, np.ndarray]], n_codes: int, n_strata: int,
          k: int) -> _Scan:
    """One streaming pass over the rows of each corpus in per_corpus: {corpus_id: (code by doc_idx
    (-1: not looked at), stratum by doc_idx)}. DuckDB decodes a batch (on its threads), then the
    compiled loop counts it. (Counting on a second thread, or while DuckDB decodes the next batch,
    measured no faster on the 2-core dev box, so neither is done.)"""
    import duckdb

    kernel = _kernel()
    k = max(int(k), 0)
    count = np.zeros((n_codes, n_strata, sae.d_sae), dtype=np.int64)
    total = np.zeros((n_codes, sae.d_sae), dtype=np.float64)
    top_value = np.full((n_codes, sae.d_sae, k), -np.inf, dtype=np.float32)
    top_doc = np.full((n_codes, sae.d_sae, k), -1, dtype=np.int32)
    for cid, (code, stratum) in per_corpus.items():
        code = np.ascontiguousarray(code, dtype=np.int16)
        stratum = np.ascontiguousarray(stratum, dtype=np.int8)
        try:
            reader = store.con.sql(
                "SELECT doc_idx::INTEGER AS doc_idx, feature::INTEGER AS feature, value::REAL AS value "
                "FROM activations WHERE corpus_id = ? AND sae_key = ?",
                params=[cid, sae.sae_key],
            ).to_arrow_reader(SCAN_BATCH_ROWS)
            for batch in reader:
                kernel(_np(batch.column(0), np.int32), _np(batch.column(1), np.int32), _np(batch.column(2), np.float32),
                       code, stratum, count, total, top_value, top_doc)
        except duckdb.IOException as e:  # a shard file gone or damaged since the store was opened
            raise store._damaged(e) from None
    return _Scan(count, total, top_value, top_doc)


def _np(column: pa.Array, dtype) -> np.ndarray:
    return np.ascontiguousarray(column.to_numpy(zero_copy_only=False), dtype=dtype)


def _counts(scan: _Scan, sides: _Sides, codes_a: list[int], codes_b: list[int], *, stratified: bool):
    """counts[side, stratum, feature] of documents where each feature fires, and n[side, stratum]."""
    if stratified:
        counts = np.stack([scan.count[codes_a].sum(0), scan.count[codes_b].sum(0)])
        n = np.stack([np.bincount(sides.sa, minlength=sides.n_strata), np.bincount(sides.sb, minlength=sides.n_strata)])
    else:
        counts = np.stack([scan.count[codes_a].sum((0, 1)), scan.count[codes_b].sum((0, 1))])[:, None, :]
        n = np.array([[len(sides.la)], [len(sides.lb)]])
    return counts, n.astype(np.int64)


def _mean_values(scan: _Scan, codes_a: list[int], codes_b: list[int], features: np.ndarray) -> pl.DataFrame:
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


# --- statistics -------------------------------------------------------------------------------------


def _stats():
    """scipy.stats, imported only where needed (Fisher's exact test, McNemar's exact binomial, the
    exact Mann–Whitney test of tiny samples): its import costs about half a second."""
    from scipy import stats

    return stats


def _chi2_sf_1(x: np.ndarray) -> np.ndarray:
    """scipy.stats.chi2.sf(x, 1) for x >= 0 (the same function: chdtrc)."""
    return special.chdtrc(1, np.asarray(x, dtype=np.float64))


def _bh(ps: np.ndarray) -> np.ndarray:
    """scipy.stats.false_discovery_control(ps) (Benjamini–Hochberg), the same steps in the same order
    so the q-values are identical, without importing scipy.stats."""
    ps = np.asarray(ps, dtype=np.float64).ravel()
    if not np.all(ps == np.clip(ps, 0.0, 1.0)):
        raise ValueError("`ps` must include only numbers between 0 and 1.")
    if ps.size <= 1:
        return ps
    m = ps.shape[-1]
    order = np.argsort(ps)
    q = ps[order]
    q *= m / np.arange(1, m + 1, dtype=np.float64)
    np.minimum.accumulate(q[::-1], out=q[::-1])
    out = np.empty_like(q)
    out[order] = q
    return np.clip(out, 0.0, 1.0)


def _mann_whitney_p(x: np.ndarray, y: np.ndarray) -> float:
    """Two-sided p of scipy.stats.mannwhitneyu(x, y) for integer samples (token lengths): the
    asymptotic test with tie correction and continuity correction, from value counts instead of a
    sort, with the same float operations (rank sums of integer data are exact in float64 below
    2**52, so they do not depend on summation order). scipy itself where it would use the exact
    distribution (a sample of at most 8 with no ties) or the sums could round."""
    x, y = np.asarray(x), np.asarray(y)
    n1, n2 = len(x), len(y)
    n = n1 + n2
    both = np.concatenate([x, y])
    if not np.issubdtype(both.dtype, np.integer) or float(n1) * n > 2.0**52:
        return float(_stats().mannwhitneyu(x, y).pvalue)
    lo, hi = int(both.min()), int(both.max())
    if hi - lo <= 4 * n + 1024:
        cx = np.bincount(x - lo, minlength=hi - lo + 1)
        counts = np.bincount(both - lo, minlength=hi - lo + 1)
        keep = counts > 0
        cx, counts = cx[keep], counts[keep]
    else:
        _, inverse, counts = np.unique(both, return_inverse=True, return_counts=True)
        cx = np.bincount(inverse[:n1], minlength=len(counts))
    if not (n1 > 8 and n2 > 8) and not (counts > 1).any():
        return float(_stats().mannwhitneyu(x, y).pvalue)
    first = np.cumsum(counts) - counts + 1  # 1-based ordinal rank of each value's first occurrence
    ranks = first.astype(np.float64) + (counts.astype(np.float64) - 1) / 2  # average ranks
    R1 = np.float64((cx * ranks).sum())
    U1 = R1 - n1 * (n1 + 1) / 2
    U2 = n1 * n2 - U1
    U = np.maximum(U1, U2)
    t = np.zeros(n, dtype=np.float64)  # scipy's tie array: each value's count at its first sorted position
    t[first - 1] = counts
    tie_term = np.sum(t**3 - t, axis=-1)
    s = np.sqrt(n1 * n2 / 12 * ((n + 1) - tie_term / (n * (n - 1))))
    numerator = U - n1 * n2 / 2
    numerator -= 0.5
    with np.errstate(divide="ignore", invalid="ignore"):
        z = numerator / s
    p = special.ndtr(-z)
    p *= 2
    return float(np.clip(p, 0.0, 1.0))


def _two_proportion_p(ca: np.ndarray, na: int, cb: np.ndarray, nb: int) -> np.ndarray:
    """Two-sided p: pooled two-proportion z-test; Fisher's exact test where an expected cell is < 5."""
    pooled = (ca + cb) / (na + nb)
    se = np.sqrt(pooled * (1 - pooled) * (1 / na + 1 / nb))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, (ca / na - cb / nb) / se, 0.0)
    p = 2 * special.ndtr(-np.abs(z))  # = scipy.stats.norm.sf(|z|), without importing scipy.stats
    m = ca + cb
    expected_min = np.minimum.reduce([m * na, m * nb, (na + nb - m) * na, (na + nb - m) * nb]) / (na + nb)
    for i in np.flatnonzero(expected_min < 5):
        p[i] = _stats().fisher_exact([[ca[i], na - ca[i]], [cb[i], nb - cb[i]]]).pvalue
    return np.clip(p, 0.0, 1.0)


def _cmh(ca_s: np.ndarray, cb_s: np.ndarray, na_s: np.ndarray, nb_s: np.ndarray):
    """Cochran–Mantel–Haenszel over strata (rows of ca_s/cb_s), no continuity correction.
    Returns (stratum-weighted difference in proportions, p-value)."""
    na_s = na_s[:, None].astype(np.float64)
    nb_s = nb_s[:, None].astype(np.float64)
    both = (na_s > 0) & (nb_s > 0)
    N = na_s + nb_s
    m1 = ca_s + cb_s
    with np.errstate(divide="ignore", invalid="ignore"):
        E = np.where(both, na_s * m1 / N, 0.0)
        V = np.where(both & (N > 1), na_s * nb_s * m1 * (N - m1) / (N * N * (N - 1)), 0.0)
        w = np.where(both, na_s * nb_s / N, 0.0)
        d = np.where(both, ca_s / na_s - cb_s / nb_s, 0.0)
    num = np.where(both, ca_s - E, 0.0).sum(0)
    var = V.sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        chi2 = np.where(var > 0, num * num / var, 0.0)
        diff_adj = np.where(w.sum(0) > 0, (w * d).sum(0) / w.sum(0), 0.0)
    return diff_adj, _chi2_sf_1(chi2)


def _mcnemar(store: Store, a: Selection, b: Selection, features: np.ndarray) -> np.ndarray:
    """McNemar's test on discordant pairs (row i of a pairs with row i of b): exact binomial when
    fewer than 25 discordant pairs, else chi-square with continuity correction."""
    from saeembed.analysis.selection import embedding_matrix

    xa = embedding_matrix(store, a, binary=True).tocsc()[:, features]
    xb = embedding_matrix(store, b, binary=True).tocsc()[:, features]
    both = np.asarray(xa.multiply(xb).sum(0)).ravel()
    only_a = np.asarray(xa.sum(0)).ravel() - both
    only_b = np.asarray(xb.sum(0)).ravel() - both
    m = only_a + only_b
    with np.errstate(divide="ignore", invalid="ignore"):
        chi2 = np.where(m > 0, (np.abs(only_a - only_b) - 1) ** 2 / m, 0.0)
    p = _chi2_sf_1(chi2)
    for i in np.flatnonzero((m > 0) & (m < 25)):
        p[i] = _stats().binomtest(int(only_a[i]), int(m[i]), 0.5).pvalue
    p[m == 0] = 1.0
    return np.clip(p, 0.0, 1.0)


def _pair(store: Store, a: Selection, b: Selection, column: str):
    """Keep documents whose `column` value appears on both sides, aligned pair by pair."""
    from saeembed.analysis.selection import doc_table

    keys = []
    for sel in (a, b):
        table = doc_table(store, sel.corpus, sel.sae)
        if column not in table.columns:
            raise InputError(f"--paired-on: {sel.corpus.name!r} has no column {column!r}")
        t = table.filter(pl.col("doc_idx").is_in(sel.doc_idx.tolist()), pl.col(column).is_not_null())
        if t[column].n_unique() != t.height:
            raise InputError(f"--paired-on {column}: values repeat within {sel.name!r}; each must name one document")
        keys.append(t.select(pl.col(column).cast(pl.Utf8).alias("key"), "doc_idx"))
    pairs = keys[0].join(keys[1], on="key", suffix="_b").sort("doc_idx")
    if pairs.is_empty():
        raise InputError(f"--paired-on {column}: no value appears on both sides")
    ia = pairs["doc_idx"].to_numpy().astype(np.int64)
    ib = pairs["doc_idx_b"].to_numpy().astype(np.int64)
    # row i of A pairs with row i of B (B's doc_idx follows its partners, so it is not sorted)
    return Selection(a.corpus, a.sae, ia, a.name), Selection(b.corpus, b.sae, ib, b.name), len(ia)


def _generic(store: Store, sel: Selection, features: np.ndarray, pooled_freq: np.ndarray, cfg: DiffConfig):
    reasons = np.full(len(features), "", dtype=object)
    everywhere = pooled_freq >= cfg.generic_freq
    reasons[everywhere] = f"fires on ≥{cfg.generic_freq:.0%} of documents"
    probe = store.probe(sel.sae, PROBE)
    if probe is None:
        state = "not available for this SAE (encode any corpus with it to compute)"
    else:
        rand = dict(zip(probe["feature"].to_list(), probe["value"].to_list()))
        rf = np.array([rand.get(int(f), 0.0) for f in features])
        noisy = rf >= cfg.random_freq
        reasons[noisy & ~everywhere] = f"fires on ≥{cfg.random_freq:.0%} of random-token texts"
        everywhere = everywhere | noisy
        state = "used"
    return everywhere, reasons.tolist(), state


# --- labels and exemplars ----------------------------------------------------------------------------


def _annotate(store: Store, a: Selection, b: Selection, frame: pl.DataFrame, cfg: DiffConfig, scan: _Scan,
              codes_a: list[int], codes_b: list[int]) -> pl.DataFrame:
    features = frame["feature"].to_list()
    labels = store.labels(a.sae.sae_key, features).select("feature", "label")
    frame = frame.join(labels, on="feature", how="left")
    picks = {side: _top_rows(scan, codes, features, cfg.exemplars) for side, codes in (("a", codes_a), ("b", codes_b))}
    texts = _exemplar_texts(store, a, b, picks, cfg.snippet_width)
    for side in ("a", "b"):
        ex = picks[side].join(texts[side], on=["feature", "doc_idx"], how="inner").sort(
            ["feature", "value", "doc_idx"], descending=[False, True, False]).select("feature", "snippet")
        col = f"exemplar_{side}"
        ex = ex.group_by("feature").agg(pl.col("snippet").alias(col))
        if cfg.exemplars == 1:
            ex = ex.with_columns(pl.col(col).list.first())
        frame = frame.join(ex, on="feature", how="left")
    order = ["feature", "label", "freq_a", "freq_b", "diff", "ratio", "p_value", "q_value", "more_in",
             "diff_adj", "mean_a", "mean_b", "docs_a", "docs_b", "p_raw", "q_raw", "p_adj", "q_adj",
             "generic", "generic_reason", "exemplar_a", "exemplar_b"]
    return frame.select(order)


def _top_rows(scan: _Scan, codes: list[int], features: list[int], k: int) -> pl.DataFrame:
    """The k strongest (feature, doc_idx, value) of each listed feature over the documents of `codes`
    (value descending, then doc_idx ascending: the order side_exemplars uses)."""
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


def _exemplar_texts(store: Store, a: Selection, b: Selection, picks: dict[str, pl.DataFrame],
                    width: int) -> dict[str, pl.DataFrame]:
    """(feature, doc_idx, snippet) for the picked rows of each side: the span of the row's strongest
    token from the activations, the text from the documents (only those rows are read)."""
    empty = pl.DataFrame(schema={"feature": pl.Int64, "doc_idx": pl.Int32, "snippet": pl.Utf8})
    out = {"a": empty, "b": empty}
    by_corpus: dict[int, list[str]] = {}
    for side, sel in (("a", a), ("b", b)):
        by_corpus.setdefault(sel.corpus.corpus_id, []).append(side)
    for cid, sides in by_corpus.items():
        pairs = pl.concat([picks[s].select("feature", "doc_idx") for s in sides]).unique()
        if pairs.is_empty():
            continue
        # semi join on doc_idx alone: DuckDB then pushes the few wanted doc_idx into the scan (row groups
        # skipped); a (doc_idx, feature) join would read every row. The pairs are picked out after.
        docs = pa.table({"doc_idx": pairs["doc_idx"].unique().cast(pl.Int32).to_arrow()})
        with store.registered("_diff_ex_docs", docs):
            rows = store.query(
                """
                SELECT a.feature::BIGINT AS feature, a.doc_idx::INTEGER AS doc_idx, a.span_start, a.span_end
                FROM activations a SEMI JOIN _diff_ex_docs w ON a.doc_idx = w.doc_idx
                WHERE a.corpus_id = ? AND a.sae_key = ?
                """,
                [cid, a.sae.sae_key],
            ).join(pairs, on=["feature", "doc_idx"], how="semi")
            texts = store.query(
                "SELECT d.doc_idx::INTEGER AS doc_idx, d.text FROM documents d SEMI JOIN _diff_ex_docs w "
                "ON d.doc_idx = w.doc_idx WHERE d.corpus_id = ?",
                [cid],
            )
        rows = rows.join(texts, on="doc_idx", how="inner")
        snippets = [snippet(t, s, e, width) for t, s, e in zip(rows["text"], rows["span_start"], rows["span_end"])]
        found = rows.select("feature", "doc_idx").with_columns(pl.Series("snippet", snippets, pl.Utf8))
        for s in sides:
            out[s] = found
    return out


def side_exemplars(store: Store, sel: Selection, features: list[int], *, per_feature: int = 1,
                   width: int = 50) -> pl.DataFrame:
    """The strongest documents of each feature within a selection: feature, doc_id, value, snippet."""
    if not features or sel.n_docs == 0:
        return pl.DataFrame(schema={"feature": pl.Int64, "doc_id": pl.Utf8, "value": pl.Float64, "snippet": pl.Utf8})
    with store.registered("_ex_docs", pa.table({"doc_idx": sel.doc_idx.astype(np.int32)})):
        # pick the top rows first, then fetch only their texts
        rows = store.query(
            """
            WITH top AS (
                SELECT a.feature, a.doc_idx, a.value, a.span_start, a.span_end
                FROM activations a SEMI JOIN _ex_docs s ON a.doc_idx = s.doc_idx
                WHERE a.corpus_id = ? AND a.sae_key = ? AND a.feature IN (SELECT unnest(?))
                QUALIFY row_number() OVER (PARTITION BY a.feature ORDER BY a.value DESC, a.doc_idx) <= ?
            )
            SELECT t.feature::BIGINT AS feature, d.doc_id, t.value::DOUBLE AS value, t.span_start, t.span_end, d.text
            FROM top t JOIN documents d ON d.corpus_id = ? AND d.doc_idx = t.doc_idx
            ORDER BY t.feature, t.value DESC
            """,
            [sel.corpus.corpus_id, sel.sae.sae_key, features, per_feature, sel.corpus.corpus_id],
        )
    snippets = [snippet(t, s, e, width) for t, s, e in zip(rows["text"], rows["span_start"], rows["span_end"])]
    return rows.drop("text", "span_start", "span_end").with_columns(pl.Series("snippet", snippets, pl.Utf8))


def where_columns(store: Store, corpus: str) -> list[str]:
    """Columns a --where filter may name for this corpus (for help and error messages)."""
    from saeembed.analysis.selection import doc_table

    return doc_table(store, corpus).columns


__all__ = ["DiffConfig", "DiffResult", "diff", "diff_corpora", "diff_slices", "diff_by", "side_exemplars",
           "parse_filter"]


def top_diff_features(store: Store, a: str, b: str, top: int = 20, sae: str | None = None) -> list[int]:
    """The features that differ most between corpora a and b (saeembed.analysis.diff's ranking: generic
    features left out, length-controlled when the corpora's lengths differ)."""
    return diff_corpora(store, a, b, sae=sae, config=DiffConfig(top=top)).frame["feature"].to_list()
