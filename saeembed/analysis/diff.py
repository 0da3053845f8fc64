"""Dataset diffing: which features fire more often in side A than in side B, and how sure we are.

A side is a Selection (a corpus, or a filtered slice of one). Per feature we count, in DuckDB, the
documents where it fires on each side (never a dense matrix), then test the two proportions:
a two-proportion z-test, Fisher's exact test when an expected cell is below 5, or McNemar's test
when A and B are paired documents (same prompt). p-values are corrected with Benjamini–Hochberg.

Confounds are reported, not hidden:
- Length: max-pooling makes long documents light up more features. The summary states the length
  difference; the length-controlled ranking stratifies documents into token-length bins (pooled
  quantiles) and uses the Cochran–Mantel–Haenszel test and a stratum-weighted difference.
- Generic features (firing on nearly every document, or on random-token text as measured once per
  SAE by the encode's random probe) are flagged and left out unless keep_generic.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl
import pyarrow as pa
from scipy import stats

from saeembed.analysis.selection import Selection, require_docs, select
from saeembed.encode.probe import PROBE
from saeembed.errors import InputError, StoreError
from saeembed.filters import parse_filter
from saeembed.store import Store
from saeembed.store.store import snippet


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
    sa = select(store, corpus, where=where, sae=sae)
    if vs is not None:
        sb = select(store, corpus, where=vs, sae=sae)
    else:
        whole = select(store, corpus, sae=sae)
        rest = np.setdiff1d(whole.doc_idx, sa.doc_idx)
        sb = Selection(whole.corpus, whole.sae, rest, f"{corpus} not ({where})")
    return diff(store, sa, sb, paired_on=paired_on, config=config)


def diff_by(store: Store, corpus: str, column: str, *, where: str | None = None, sae: str | None = None,
            config: DiffConfig | None = None, max_groups: int = 50) -> dict[str, DiffResult]:
    """Each value of a metadata column against the rest of the corpus (e.g. --by generator)."""
    from saeembed.analysis.selection import doc_table

    base = select(store, corpus, where=where, sae=sae)
    table = doc_table(store, base.corpus, base.sae).filter(pl.col("doc_idx").is_in(base.doc_idx.tolist()))
    if column not in table.columns:
        raise InputError(f"corpus {corpus!r} has no column {column!r}; columns: {', '.join(table.columns)}")
    groups = table.group_by(column).agg(pl.col("doc_idx")).sort(column, nulls_last=True)
    if groups.height > max_groups:
        raise InputError(f"column {column!r} has {groups.height} distinct values; --by needs at most {max_groups}")
    if groups.height < 2:
        raise InputError(f"column {column!r} has a single value; nothing to compare")
    out = {}
    for value, idx in groups.iter_rows():
        a_idx = np.sort(np.asarray(idx, dtype=np.int64))
        b_idx = np.setdiff1d(base.doc_idx, a_idx)
        label = "null" if value is None else str(value)
        sa = Selection(base.corpus, base.sae, a_idx, f"{column} = {label}")
        sb = Selection(base.corpus, base.sae, b_idx, f"{column} != {label}")
        out[label] = diff(store, sa, sb, config=config)
    return out


# --- the computation --------------------------------------------------------------------------------


def diff(store: Store, a: Selection, b: Selection, *, paired_on: str | None = None,
         config: DiffConfig | None = None) -> DiffResult:
    cfg = config or DiffConfig()
    if cfg.length_control not in ("on", "off", "auto"):
        raise InputError(f"length control must be on, off or auto, not {cfg.length_control!r}")
    if a.sae.sae_key != b.sae.sae_key:
        raise StoreError(f"{a.name!r} and {b.name!r} are encoded with different SAEs ({a.sae.sae_hash} vs "
                         f"{b.sae.sae_hash}); encode both with the same SAE to compare them")
    require_docs(a), require_docs(b)
    if paired_on:
        a, b, n_pairs = _pair(store, a, b, paired_on)
    sides = _side_table(store, a, b, cfg.length_bins)
    lengths = _length_summary(sides)
    use_length = cfg.length_control == "on" or (cfg.length_control == "auto" and lengths["differ"] and not paired_on)
    counts, n = _counts(store, a, b, sides, stratified=use_length)
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
        q_value=pl.Series(stats.false_discovery_control(frame["p_value"].to_numpy()) if frame.height else [], dtype=pl.Float64),
        q_raw=pl.Series(stats.false_discovery_control(frame["p_raw"].to_numpy()) if frame.height else [], dtype=pl.Float64),
        q_adj=pl.Series(stats.false_discovery_control(frame["p_adj"].to_numpy()) if frame.height and use_length
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
    frame = frame.join(_mean_values(store, sides, a.sae.sae_key, frame["feature"].to_list()), on="feature", how="left")
    frame = _annotate(store, a, b, frame, cfg)
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


def _side_table(store: Store, a: Selection, b: Selection, bins: int) -> pl.DataFrame:
    """(corpus_id, doc_idx, side, n_tokens, stratum) for every document of both sides."""
    parts = []
    for side, sel in ((0, a), (1, b)):
        parts.append(pl.DataFrame({
            "corpus_id": np.full(sel.n_docs, sel.corpus.corpus_id, dtype=np.int32),
            "doc_idx": sel.doc_idx.astype(np.int32),
            "side": np.full(sel.n_docs, side, dtype=np.int8),
        }))
    frame = pl.concat(parts)
    tokens = store.query(
        "SELECT corpus_id, doc_idx, n_tokens FROM encoded_docs WHERE sae_key = ? AND corpus_id IN (SELECT unnest(?))",
        [a.sae.sae_key, sorted({a.corpus.corpus_id, b.corpus.corpus_id})],
    )
    frame = frame.join(tokens, on=["corpus_id", "doc_idx"], how="left").with_columns(pl.col("n_tokens").fill_null(0))
    loglen = np.log1p(frame["n_tokens"].to_numpy().astype(np.float64))
    edges = np.unique(np.quantile(loglen, np.linspace(0, 1, bins + 1)[1:-1])) if bins > 1 else np.array([])
    return frame.with_columns(stratum=pl.Series(np.searchsorted(edges, loglen, side="right").astype(np.int8)))


def _length_summary(sides: pl.DataFrame) -> dict:
    la = sides.filter(pl.col("side") == 0)["n_tokens"].to_numpy()
    lb = sides.filter(pl.col("side") == 1)["n_tokens"].to_numpy()
    med_a, med_b = float(np.median(la)), float(np.median(lb))
    p = float(stats.mannwhitneyu(la, lb).pvalue) if len(la) and len(lb) and (la.std() or lb.std() or la[0] != lb[0]) else 1.0
    ratio = (med_a + 1) / (med_b + 1)
    differ = p < 0.01 and not (1 / 1.2 <= ratio <= 1.2)
    note = (f"A's documents are {ratio:.2f}× as long as B's (median {med_a:.0f} vs {med_b:.0f} tokens, "
            f"Mann–Whitney p = {p:.2g})")
    note += ("; longer documents fire more features under max-pooling, so ranking is length-controlled"
             if differ else "; lengths are comparable")
    return {"differ": differ, "note": note, "table": {
        "median_tokens_a": med_a, "median_tokens_b": med_b, "mean_tokens_a": float(la.mean()),
        "mean_tokens_b": float(lb.mean()), "ratio": ratio, "p_value": p}}


def _counts(store: Store, a: Selection, b: Selection, sides: pl.DataFrame, *, stratified: bool):
    """counts[side, stratum, feature] of documents where each feature fires, and n[side, stratum]."""
    n_strata = int(sides["stratum"].max()) + 1 if stratified else 1
    if not stratified:
        sides = sides.with_columns(stratum=pl.lit(0, dtype=pl.Int8))
    n = np.zeros((2, n_strata), dtype=np.int64)
    per = sides.group_by("side", "stratum").len()
    n[per["side"].to_numpy(), per["stratum"].to_numpy()] = per["len"].to_numpy()
    whole = (not stratified and a.corpus.corpus_id != b.corpus.corpus_id
             and a.n_docs == a.corpus.n_docs and b.n_docs == b.corpus.n_docs)
    if whole:  # two whole corpora: no per-document join needed
        rows = store.con.sql(
            "SELECT CASE WHEN corpus_id = ? THEN 0 ELSE 1 END::TINYINT AS side, 0::TINYINT AS stratum, feature, "
            "count(*)::BIGINT AS c FROM activations WHERE sae_key = ? AND corpus_id IN (?, ?) GROUP BY ALL",
            params=[a.corpus.corpus_id, a.sae.sae_key, a.corpus.corpus_id, b.corpus.corpus_id],
        ).fetchnumpy()
    else:
        with store.registered("_diff_sides", sides.select("corpus_id", "doc_idx", "side", "stratum").to_arrow()):
            rows = store.con.sql(
                """
                SELECT s.side, s.stratum, a.feature, count(*)::BIGINT AS c
                FROM activations a JOIN _diff_sides s ON a.corpus_id = s.corpus_id AND a.doc_idx = s.doc_idx
                WHERE a.sae_key = ? AND a.corpus_id IN (SELECT DISTINCT corpus_id FROM _diff_sides)
                GROUP BY ALL
                """,
                params=[a.sae.sae_key],
            ).fetchnumpy()
    counts = np.zeros((2, n_strata, a.sae.d_sae), dtype=np.int64)
    counts[rows["side"], rows["stratum"], rows["feature"]] = rows["c"]
    return counts, n


def _mean_values(store: Store, sides: pl.DataFrame, sae_key: int, features: list[int]) -> pl.DataFrame:
    """Mean activation where active, per side, for the listed features only (cheap: few rows)."""
    with store.registered("_diff_sides", sides.select("corpus_id", "doc_idx", "side").to_arrow()):
        rows = store.query(
            """
            SELECT a.feature::BIGINT AS feature, s.side, avg(a.value)::DOUBLE AS mean
            FROM activations a JOIN _diff_sides s ON a.corpus_id = s.corpus_id AND a.doc_idx = s.doc_idx
            WHERE a.sae_key = ? AND a.feature IN (SELECT unnest(?))
            GROUP BY ALL
            """,
            [sae_key, features],
        )
    means = pl.DataFrame({"feature": pl.Series(features, dtype=pl.Int64)})
    for side, name in ((0, "mean_a"), (1, "mean_b")):
        means = means.join(rows.filter(pl.col("side") == side).select("feature", pl.col("mean").alias(name)),
                           on="feature", how="left")
    return means


# --- statistics -------------------------------------------------------------------------------------


def _two_proportion_p(ca: np.ndarray, na: int, cb: np.ndarray, nb: int) -> np.ndarray:
    """Two-sided p: pooled two-proportion z-test; Fisher's exact test where an expected cell is < 5."""
    pooled = (ca + cb) / (na + nb)
    se = np.sqrt(pooled * (1 - pooled) * (1 / na + 1 / nb))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, (ca / na - cb / nb) / se, 0.0)
    p = 2 * stats.norm.sf(np.abs(z))
    m = ca + cb
    expected_min = np.minimum.reduce([m * na, m * nb, (na + nb - m) * na, (na + nb - m) * nb]) / (na + nb)
    for i in np.flatnonzero(expected_min < 5):
        p[i] = stats.fisher_exact([[ca[i], na - ca[i]], [cb[i], nb - cb[i]]]).pvalue
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
    return diff_adj, stats.chi2.sf(chi2, 1)


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
    p = stats.chi2.sf(chi2, 1)
    for i in np.flatnonzero((m > 0) & (m < 25)):
        p[i] = stats.binomtest(int(only_a[i]), int(m[i]), 0.5).pvalue
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


def _annotate(store: Store, a: Selection, b: Selection, frame: pl.DataFrame, cfg: DiffConfig) -> pl.DataFrame:
    features = frame["feature"].to_list()
    labels = store.labels(a.sae.sae_key, features).select("feature", "label")
    frame = frame.join(labels, on="feature", how="left")
    for side, sel in (("a", a), ("b", b)):
        ex = side_exemplars(store, sel, features, per_feature=cfg.exemplars, width=cfg.snippet_width)
        col = f"exemplar_{side}"
        ex = ex.group_by("feature").agg(pl.col("snippet").alias(col))
        if cfg.exemplars == 1:
            ex = ex.with_columns(pl.col(col).list.first())
        frame = frame.join(ex, on="feature", how="left")
    order = ["feature", "label", "freq_a", "freq_b", "diff", "ratio", "p_value", "q_value", "more_in",
             "diff_adj", "mean_a", "mean_b", "docs_a", "docs_b", "p_raw", "q_raw", "p_adj", "q_adj",
             "generic", "generic_reason", "exemplar_a", "exemplar_b"]
    return frame.select(order)


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
