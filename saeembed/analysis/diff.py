"""Dataset diffing: which features fire more often in side A than in side B, and how sure we are.

A side is a Selection (a corpus, or a filtered slice of one). Per feature we count the documents where
it fires on each side (never a dense matrix), then test the two proportions:
a two-proportion z-test, Fisher's exact test when an expected cell is below 5, or McNemar's test
when A and B are paired documents (same prompt). p-values are corrected with Benjamini–Hochberg.

Confounds are reported, not hidden:
- Length: max-pooling makes long documents light up more features. The summary states the length
  difference; the length-controlled ranking stratifies documents into token-length bins (pooled
  quantiles) and uses the Cochran–Mantel–Haenszel test and a stratum-weighted difference
  (diff_length).
- Generic features (firing on nearly every document, or on random-token text as measured once per
  SAE by the encode's random probe) are flagged and left out unless keep_generic.

Counting is one streaming pass over the corpus's sparse rows (diff_scan); the statistics are
saeembed.stats; labels and exemplar snippets are added by diff_exemplars.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from saeembed.analysis.diff_exemplars import annotate, scan_rows
from saeembed.analysis.diff_length import (Sides, length_finding, length_summary, lengths_overlap, side_table, strata,
                                           token_lengths)
from saeembed.analysis.diff_rank import rank, top_features
from saeembed.analysis.diff_scan import Scan, fits, mean_values, scan_activations, side_counts
from saeembed.analysis.selection import Selection, embedding_matrix, require_docs, select, select_many, select_table
from saeembed.analysis.separability import separability
from saeembed.config import DiffConfig, section_sizes
from saeembed.encode.probe import random_share
from saeembed.errors import InputError, StoreError
from saeembed.store.filters import parse_filter
from saeembed.stats import cmh, generic_rule, mcnemar_p, two_proportion_p
from saeembed.store import Store


@dataclass
class DiffResult:
    frame: pl.DataFrame  # one row per (ranking, feature), each ranking best first (see diff_rank)
    summary: dict = field(default_factory=dict)
    a: Selection | None = field(default=None, compare=False)  # the sides compared
    b: Selection | None = field(default=None, compare=False)


# --- entry points ---------------------------------------------------------------------------------


def diff_selections(store: Store, a: str, b: str | None = None, *, where: str | None = None, vs: str | None = None,
                    sae: str | None = None) -> tuple[Selection, Selection]:
    """The two sides of a diff: corpus A (filtered by `where`) against corpus B (filtered by `vs`), or two
    slices of A, or (no B, no `vs`) the `where` slice of A against the rest of A."""
    if b is not None:
        return select(store, a, where=where, sae=sae), select(store, b, where=vs, sae=sae)
    sa, other = select_many(store, a, [where, vs], sae=sae)  # vs None: the whole corpus
    if vs is not None:
        return sa, other
    return sa, Selection(other.corpus, other.sae, _rest(other.doc_idx, sa.doc_idx), f"{a} not ({where})")


def diff_corpora(store: Store, a: str, b: str, *, where_a: str | None = None, where_b: str | None = None,
                 sae: str | None = None, paired_on: str | None = None, config: DiffConfig | None = None) -> DiffResult:
    """Corpus A against corpus B (each optionally filtered)."""
    sa, sb = diff_selections(store, a, b, where=where_a, vs=where_b, sae=sae)
    return diff(store, sa, sb, paired_on=paired_on, config=config)


def diff_slices(store: Store, corpus: str, where: str, vs: str | None = None, *, sae: str | None = None,
                paired_on: str | None = None, config: DiffConfig | None = None) -> DiffResult:
    """Two filtered slices of one corpus; without `vs`, the slice against the rest of the corpus."""
    sa, sb = diff_selections(store, corpus, where=where, vs=vs, sae=sae)
    return diff(store, sa, sb, paired_on=paired_on, config=config)


def diff_by(store: Store, corpus: str, column: str, *, where: str | None = None, sae: str | None = None,
            config: DiffConfig | None = None, max_groups: int = 50) -> dict[str, DiffResult]:
    """Each value of a metadata column against the rest of the corpus (e.g. --by generator).
    One pass over the sparse rows counts every group at once (each group's rest is the other groups)."""
    cfg = _check_config(config)
    info = store.corpus(corpus)
    columns = store.filter_columns(info)
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
    tokens = token_lengths(store, base.sae.sae_key, base.corpus.corpus_id, base.doc_idx)
    stratum_of, n_strata = strata(tokens, [base.doc_idx], cfg.length_bins)
    n_groups = len(pairs)
    if n_groups >= 2**15 or not fits(n_groups, n_strata, base.sae.d_sae, scan_rows(cfg.exemplars)):  # one pass per group
        return {label: diff(store, sa, sb, config=cfg) for label, sa, sb in pairs}
    code = np.full(len(stratum_of), -1, dtype=np.int16)
    for g, (_, sa, _) in enumerate(pairs):
        code[sa.doc_idx] = g
    scan = scan_activations(store, base.sae, {base.corpus.corpus_id: (code, stratum_of)}, n_groups, n_strata,
                            scan_rows(cfg.exemplars))
    out = {}
    for g, (label, sa, sb) in enumerate(pairs):
        sides = Sides(tokens[sa.doc_idx], tokens[sb.doc_idx], stratum_of[sa.doc_idx], stratum_of[sb.doc_idx], n_strata)
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
    sides = side_table(store, a, b, cfg.length_bins)
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
    scan = scan_activations(store, a.sae, per_corpus, n_codes, sides.n_strata, scan_rows(cfg.exemplars))
    return _diff_scanned(store, a, b, sides, scan, codes_a, codes_b, cfg, paired_on=paired_on, n_pairs=n_pairs)


def _diff_scanned(store: Store, a: Selection, b: Selection, sides: Sides, scan: Scan, codes_a: list[int],
                  codes_b: list[int], cfg: DiffConfig, *, paired_on: str | None = None,
                  n_pairs: int | None = None) -> DiffResult:
    """The statistics and the table, from the counts of one scan (codes_a/codes_b: A's and B's codes)."""
    lengths = length_summary(sides)
    use_length = cfg.length_control == "on" or (cfg.length_control == "auto" and lengths["differ"] and not paired_on)
    counts, n = side_counts(scan, sides, codes_a, codes_b, stratified=use_length)
    if use_length and (not lengths_overlap(sides) or not ((n[0] > 0) & (n[1] > 0)).any()):
        # Every document of one side is longer than all of the other's: within-bin comparisons would
        # only compare the tails of the two ranges, so no ranking is offered as controlling for length.
        use_length = False
        lengths["no_shared_bin"] = True
        lengths["note"] += ("; the two sides' lengths do not overlap, so no ranking can control for length and the "
                            "raw ranking (length included) is the only one")
        counts, n = side_counts(scan, sides, codes_a, codes_b, stratified=False)
    ca, cb = counts[0].sum(0), counts[1].sum(0)
    na, nb = int(n[0].sum()), int(n[1].sum())
    observed = np.flatnonzero(ca + cb >= max(cfg.min_docs, 1))
    ca, cb = ca[observed], cb[observed]
    fa, fb = ca / na, cb / nb

    p_raw = two_proportion_p(ca, na, cb, nb)
    if use_length:
        diff_adj, p_adj = cmh(counts[0][:, observed], counts[1][:, observed], n[0], n[1])
    else:  # not computed: lengths are comparable (or control is off), so the raw numbers stand
        diff_adj = p_adj = np.full(len(observed), np.nan)
    p_first = _mcnemar(store, a, b, observed) if paired_on else p_raw
    test = "mcnemar" if paired_on else "two-proportion/fisher"

    generic, reasons, probe_state = _generic(store, a, observed, (ca + cb) / (na + nb), cfg)
    frame = pl.DataFrame({
        "feature": observed.astype(np.int64),
        "freq_a": fa, "freq_b": fb,
        "docs_a": ca.astype(np.int64), "docs_b": cb.astype(np.int64),
        "diff": fa - fb,
        "ratio": ((ca + 0.5) / (na + 1)) / ((cb + 0.5) / (nb + 1)),
        "diff_adj": diff_adj,
        "p_raw": p_raw, "p_adj": p_adj, "_p_first": p_first,
        "generic": generic, "generic_reason": reasons,
    })
    excluded = int(frame["generic"].sum())
    if not cfg.keep_generic:
        frame = frame.filter(~pl.col("generic"))
    # BH over every feature tested (after generic features are set aside, as they are not reported).
    frame, significant = rank(frame, p_first="_p_first", length=use_length, top=cfg.top)
    frame = frame.drop("_p_first")
    features = frame["feature"].unique(maintain_order=True).to_numpy()
    frame = frame.join(mean_values(scan, codes_a, codes_b, features), on="feature", how="left", maintain_order="left")
    frame = annotate(store, a, b, frame, scan, codes_a, codes_b, exemplars=cfg.exemplars, width=cfg.snippet_width)
    summary = {
        "a": a.name, "b": b.name, "n_a": na, "n_b": nb,
        "sae": a.sae.sae_hash, "test": test,
        "rankings": list(significant),
        "length_controlled": bool(use_length),
        "length": lengths["table"],
        "length_note": lengths["note"],
        "features_tested": int(len(observed)),
        "generic_excluded": 0 if cfg.keep_generic else excluded,
        "random_probe": probe_state,
        "significant_q05": significant["raw"],
    }
    if use_length:
        summary["test_length_controlled"] = "cmh-length-strata"
        summary["significant_q05_length_controlled"] = significant["length_controlled"]
    if paired_on:
        summary["paired_on"] = paired_on
        summary["pairs"] = n_pairs
    sep = None
    if cfg.separability:
        lists = top_features(frame, section_sizes(cfg.separability_top, len(significant)))  # as DiffView shows them
        if len(lists) > 1:  # what a reader sees: both sections together
            lists["listed"] = list(dict.fromkeys(f for fs in lists.values() for f in fs))
        sep = separability(store, a, b, lists, lengths=(sides.la, sides.lb),
                           group_column=cfg.group_column or paired_on, folds=cfg.separability_folds,
                           max_docs=cfg.separability_max_docs, seed=cfg.seed)
        summary["separability"] = sep
    finding = length_finding(lengths, sep)
    if finding:
        summary["length_finding"] = finding
    return DiffResult(frame, summary, a, b)


def _mcnemar(store: Store, a: Selection, b: Selection, features: np.ndarray) -> np.ndarray:
    """McNemar's test on discordant pairs (row i of a pairs with row i of b)."""
    xa = embedding_matrix(store, a, binary=True).tocsc()[:, features]
    xb = embedding_matrix(store, b, binary=True).tocsc()[:, features]
    both = np.asarray(xa.multiply(xb).sum(0)).ravel()
    only_a = np.asarray(xa.sum(0)).ravel() - both
    only_b = np.asarray(xb.sum(0)).ravel() - both
    return mcnemar_p(only_a, only_b)


def _pair(store: Store, a: Selection, b: Selection, column: str):
    """Keep documents whose `column` value appears on both sides, aligned pair by pair."""
    keys = []
    for sel in (a, b):
        table = store.doc_table(sel.corpus, sel.sae)
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
    share = random_share(store, sel.sae, features)
    generic, reasons = generic_rule(pooled_freq, share, cfg.generic_freq, cfg.random_freq)
    state = "not available for this SAE (encode any corpus with it to compute)" if share is None else "used"
    return generic, reasons.tolist(), state


def top_diff_features(store: Store, a: str, b: str | None = None, *, where: str | None = None, vs: str | None = None,
                      by: str | None = None, top: int = 20, sae: str | None = None) -> list[int]:
    """The features that differ most between corpora a and b, or the `where`/`vs` slices of a, or each
    `by` group of a and the rest: the rankings of each diff taken in turn (raw, length-controlled, ...)
    without repeats, `top` per diff (generic features left out; no separability figure)."""
    cfg = DiffConfig(top=top, exemplars=0, separability=False)
    if by:
        results = list(diff_by(store, a, by, where=where, sae=sae, config=cfg).values())
    elif b is not None or where:
        results = [diff(store, *diff_selections(store, a, b, where=where, vs=vs, sae=sae), config=cfg)]
    else:
        raise InputError("give a second corpus, --where (and optionally --vs), or --by COLUMN")
    out: dict[int, None] = {}
    for r in results:
        lists = list(top_features(r.frame, top).values())
        turns = [fs[i] for i in range(top) for fs in lists if i < len(fs)]  # raw 1st, controlled 1st, raw 2nd...
        out.update(dict.fromkeys([f for f in dict.fromkeys(turns) if f not in out][:top]))
    return list(out)


__all__ = ["DiffConfig", "DiffResult", "diff", "diff_corpora", "diff_slices", "diff_by", "diff_selections",
           "top_diff_features", "parse_filter"]
