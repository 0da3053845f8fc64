"""Describing clusters: per cluster, the features over-represented in it against the rest (with diff's
test, so a description and `diff --where "cluster.NAME = N"` agree), an exemplar per feature, and the
per-cluster table (size, share, median length, how many features differ, description)."""

from __future__ import annotations

import numpy as np
import polars as pl

from saeembed.analysis.local_tokens import ROWS, hint_tokens, local_hint, peak_token
from saeembed.analysis.names import feature_name, group_name
from saeembed.analysis.selection import Selection, embedding_matrix
from saeembed.config import DiffConfig
from saeembed.encode.probe import random_share
from saeembed.stats import bh, generic_rule, two_proportion_p
from saeembed.store import Store
from saeembed.textwindow import snippet


def describe_clusters(store: Store, sel: Selection, labels: np.ndarray, *, top: int = 5) -> pl.DataFrame:
    """Per cluster (noise excluded), the features most over-represented in it against the rest of the
    selection (share of documents where the feature fires, in minus out), with label and an exemplar
    snippet from inside the cluster; q_value is diff's test of that feature (two-proportion/Fisher, BH
    over every non-generic feature of the selection) and cluster_q05 how many features pass q <= 0.05,
    so a description agrees with `diff --where "cluster.NAME = N"`. The clusters were formed on these
    features, so such q-values are optimistic; a cluster with none below 0.05 shows tendencies only."""
    schema = {"cluster": pl.Int64, "rank": pl.Int64, "feature": pl.Int64, "freq_in": pl.Float64,
              "freq_out": pl.Float64, "diff": pl.Float64, "q_value": pl.Float64, "cluster_q05": pl.Int64,
              "label": pl.Utf8, "here": pl.Utf8, "exemplar": pl.Utf8}
    ids = sorted(int(c) for c in np.unique(labels) if c >= 0)
    if not ids:
        return pl.DataFrame(schema=schema)
    B = embedding_matrix(store, sel, binary=True)  # sparse presence over all features
    V = embedding_matrix(store, sel).tocsc()
    n = len(labels)
    total = np.asarray(B.sum(axis=0)).ravel()
    tested = _tested_features(store, sel, total)
    rows = []
    for c in ids:
        mask = labels == c
        n_in, n_out = int(mask.sum()), n - int(mask.sum())
        inside = np.asarray(B[mask].sum(axis=0)).ravel()
        f_in = inside / n_in
        f_out = (total - inside) / max(n_out, 1)
        diff = f_in - f_out
        q = np.full(len(diff), np.nan)
        if n_out:
            q[tested] = bh(two_proportion_p(inside[tested], n_in, total[tested] - inside[tested], n_out))
        n_sig = int((q[tested] <= 0.05).sum())
        best = np.lexsort((np.arange(len(diff)), -diff))[:top]
        for r, f in enumerate(best, 1):
            if diff[f] <= 0:
                break
            rows.append((c, r, int(f), float(f_in[f]), float(f_out[f]), float(diff[f]),
                         None if np.isnan(q[f]) else float(q[f]), n_sig))
    frame = pl.DataFrame(rows, schema=list(schema)[:8], orient="row")
    feats = sorted(set(frame["feature"].to_list()))
    lab = dict(store.labels(sel.sae.sae_key, feats).select("feature", "label").iter_rows()) if feats else {}
    # the cluster members where the feature is strongest: the first gives the exemplar (its strongest token
    # marked), all of them the token the feature peaks on in this cluster (saeembed.analysis.local_tokens)
    picks = []
    for c, f in frame.select("cluster", "feature").iter_rows():
        col = V[:, f].toarray().ravel() * (labels == c)
        best = np.argsort(-col, kind="stable")[:ROWS]
        picks.append([int(sel.doc_idx[i]) for i in best[col[best] > 0]])
    features = frame["feature"].to_list()
    spans = _spans(store, sel, [(d, f) for docs, f in zip(picks, features) for d in docs])
    exemplars = [snippet(*spans[(docs[0], f)], width=40) if docs and (docs[0], f) in spans else None
                 for docs, f in zip(picks, features)]
    here = [local_hint([peak_token(*spans[(d, f)]) for d in docs if (d, f) in spans], lab.get(f))
            for docs, f in zip(picks, features)]
    return frame.with_columns(
        label=pl.Series([lab.get(f) for f in features], dtype=pl.Utf8),
        here=pl.Series(here, dtype=pl.Utf8),
        exemplar=pl.Series(exemplars, dtype=pl.Utf8),
    ).cast(schema)


def _tested_features(store: Store, sel: Selection, total: np.ndarray) -> np.ndarray:
    """The features diff would test between a cluster and the rest: firing somewhere, not generic."""
    cfg = DiffConfig()
    fired = np.flatnonzero(total >= max(cfg.min_docs, 1))
    generic, _ = generic_rule(total[fired] / max(sel.n_docs, 1), random_share(store, sel.sae, fired),
                              cfg.generic_freq, cfg.random_freq)
    return fired[~generic]


def _spans(store: Store, sel: Selection, pairs: list[tuple[int, int]]) -> dict[tuple[int, int], tuple]:
    """{(doc_idx, feature): (text, span_start, span_end)} of the given rows."""
    if not pairs:
        return {}
    want = pl.DataFrame(pairs, schema={"doc_idx": pl.Int32, "feature": pl.Int64}, orient="row").unique()
    spans = store.exemplar_spans(sel.corpus.corpus_id, sel.sae.sae_key, want)
    return {(d, f): (t, s, e) for d, f, s, e, t in spans.select("doc_idx", "feature", "span_start", "span_end", "text")
            .iter_rows()}


def cluster_table(labels: np.ndarray, descriptions: pl.DataFrame, *, tokens: np.ndarray | None = None,
                  words: dict[int, list[str]] | None = None) -> pl.DataFrame:
    """One row per cluster: its name (the words that set its documents apart, `words` as
    analysis.cluster_words gives them; else cluster_name from its features' labels), size, share, its
    description's features and text, an exemplar; with `tokens`
    (per row of labels) also median_tokens, since max-pooling lets long documents fire more features, a
    cluster of long documents is described by features that may be length itself."""
    n = len(labels)
    rows = []
    for c in sorted(np.unique(labels).tolist()):
        size = int((labels == c).sum())
        part = descriptions.filter(pl.col("cluster") == c)
        if c == -1:
            rows.append((c, "noise", size, size / n, None, [], "noise (no cluster)", None))
            continue
        desc = "; ".join(
            f"{feature_name(f, lab, 40)}{_peak(here)} {fi:.0%} vs {fo:.0%}"
            for f, lab, here, fi, fo in part.select("feature", "label", "here", "freq_in", "freq_out").iter_rows()
        )
        n_sig = int(part["cluster_q05"][0]) if part.height and "cluster_q05" in part.columns else None
        name = " · ".join((words or {}).get(c) or []) or cluster_name(part)
        rows.append((c, name, size, size / n, n_sig, part["feature"].to_list(), desc,
                     part["exemplar"][0] if part.height else None))
    out = pl.DataFrame(rows, schema={"cluster": pl.Int64, "name": pl.Utf8, "size": pl.Int64, "share": pl.Float64,
                                     "features_q05": pl.Int64, "features": pl.List(pl.Int64), "description": pl.Utf8,
                                     "exemplar": pl.Utf8}, orient="row")
    if tokens is None:
        return out
    median = [float(np.median(tokens[labels == c])) for c in out["cluster"].to_list()]
    return out.with_columns(median_tokens=pl.Series(median, dtype=pl.Float64)).select(
        "cluster", "name", "size", "share", "median_tokens", "features_q05", "features", "description", "exemplar")


def _peak(here: str | None) -> str:
    """` · here «CV»`: a description's short form of the local hint."""
    return f" · here {hint_tokens(here)}" if here else ""


def cluster_name(part: pl.DataFrame) -> str:
    """A cluster's offline name: the labels of its most distinctive features (its description's rows, best
    first), e.g. "refunds · order delays"; their ids where none is labelled."""
    if part.is_empty():
        return "(no distinctive feature)"
    return group_name(part["label"].to_list()) or ", ".join(f"#{f}" for f in part["feature"].head(2).to_list())


def llm_names(store: Store, sel: Selection, assignments: pl.DataFrame, clusters: pl.DataFrame, llm) -> pl.DataFrame:
    """The cluster table with names an LLM gave from each cluster's features and a few of its documents
    (interp.assist.name_clusters) and `name_source`; where its answer was unusable the offline name stays."""
    from saeembed.interp.assist import name_clusters

    got = name_clusters(store, sel.corpus.name, assignments.select("doc_idx", "cluster"), sae=sel.sae.sae_hash, llm=llm)
    better = {c: (n, src) for c, n, src in got.select("cluster", "name", "source").iter_rows() if src.startswith("llm")}
    rows = clusters.select("cluster", "name").iter_rows()
    named = [better.get(c, (n, "offline")) for c, n in rows]
    return clusters.with_columns(name=pl.Series([n for n, _ in named], dtype=pl.Utf8),
                                 name_source=pl.Series([s for _, s in named], dtype=pl.Utf8))
