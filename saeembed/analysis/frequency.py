"""Per-corpus feature frequencies: in what share of a corpus's documents each feature fires.

The building block of every comparison: counted by the store from the sparse rows, never densified.
"""

from __future__ import annotations

import polars as pl

from saeembed.analysis.local_tokens import ROWS, exemplar_peaks, hints
from saeembed.store import SAEInfo, Store


def shared_sae(store: Store, corpora: list[str], sae: str | None = None) -> SAEInfo:
    """The one SAE all these corpora are encoded with (see Store.shared_sae)."""
    return store.shared_sae(corpora, sae)


def feature_frequencies(store: Store, corpora: list[str], *, sae: str | None = None) -> pl.DataFrame:
    """One row per (corpus, feature) that fires anywhere: docs, freq (share of the corpus), mean and max value."""
    s = shared_sae(store, corpora, sae)
    infos = [store.corpus(c) for c in corpora]
    ids = {i.corpus_id: i for i in infos}
    frame = store.feature_counts(s.sae_key, list(ids))
    sizes = pl.DataFrame(
        {"corpus_id": list(ids), "corpus": [i.name for i in ids.values()], "n_docs": [i.n_docs for i in ids.values()]},
        schema={"corpus_id": pl.Int32, "corpus": pl.Utf8, "n_docs": pl.Int64},
    )
    return (
        frame.join(sizes, on="corpus_id")
        .with_columns(freq=pl.col("docs") / pl.col("n_docs"))
        .select("corpus", "feature", "docs", "freq", "mean_value", "max_value")
        .sort("corpus", "feature")
    )


def distinctive_features(store: Store, corpus: str, others: list[str], *, top: int = 10, sae: str | None = None) -> pl.DataFrame:
    """Features most over-represented in `corpus` against the pooled `others`: freq here minus freq there,
    with the feature's label, its local hint (saeembed.analysis.local_tokens) and its strongest exemplar
    in `corpus`."""
    s = shared_sae(store, [corpus, *others], sae)
    freqs = feature_frequencies(store, [corpus, *others], sae=s.sae_hash)
    n_other = sum(store.corpus(o).n_docs for o in others)
    here = freqs.filter(pl.col("corpus") == corpus).select("feature", freq=pl.col("freq"), max_value="max_value")
    there = (
        freqs.filter(pl.col("corpus") != corpus)
        .group_by("feature")
        .agg(freq_other=pl.col("docs").sum() / n_other)
    )
    ranked = (
        here.join(there, on="feature", how="left")
        .with_columns(pl.col("freq_other").fill_null(0.0))
        .with_columns(diff=pl.col("freq") - pl.col("freq_other"))
        .sort(["diff", "feature"], descending=[True, False])
        .head(top)
    )
    features = ranked["feature"].to_list()
    labels = store.labels(s.sae_key, features)
    # the strongest exemplars once: the first gives the snippet, all of them the local hint
    snippets = store.exemplar_snippets(s.sae_key, features, corpus=corpus, per_feature=ROWS, width=40)
    named = dict(zip(labels["feature"].to_list(), labels["label"].to_list()))
    found = hints(exemplar_peaks(snippets), {f: named.get(f) for f in features})
    return (
        ranked.with_row_index("rank", offset=1)
        .join(labels.select("feature", "label"), on="feature", how="left")
        .join(snippets.group_by("feature", maintain_order=True).agg(exemplar=pl.col("snippet").first()),
              on="feature", how="left")
        .sort("rank")
        .with_columns(here=pl.col("feature").replace_strict(found, default=None, return_dtype=pl.Utf8))
        .select("feature", "freq", "freq_other", "diff", "label", "here", "exemplar")
    )
