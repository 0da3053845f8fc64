"""Labels and exemplar snippets for diff's table: the strongest rows of each feature on each side,
as found by the scan, with a text window around the span of each row's strongest token."""

from __future__ import annotations

import polars as pl

from saeembed.analysis.diff_scan import Scan, top_rows
from saeembed.analysis.selection import Selection
from saeembed.store import Store
from saeembed.textwindow import snippet

COLUMNS = ["ranking", "feature", "label", "freq_a", "freq_b", "diff", "ratio", "p_value", "q_value", "more_in",
           "diff_adj", "mean_a", "mean_b", "docs_a", "docs_b", "p_raw", "q_raw", "p_adj", "q_adj",
           "generic", "generic_reason", "exemplar_a", "exemplar_b"]


def annotate(store: Store, a: Selection, b: Selection, frame: pl.DataFrame, scan: Scan, codes_a: list[int],
             codes_b: list[int], *, exemplars: int, width: int) -> pl.DataFrame:
    """The diff table (rows per ranking: see diff_rank) with each feature's label and `exemplars` snippets
    per side (one: a string, more: a list), in the published column order."""
    features = frame["feature"].unique(maintain_order=True).to_list()  # a feature may be in both rankings
    labels = store.labels(a.sae.sae_key, features).select("feature", "label")
    frame = frame.join(labels, on="feature", how="left", maintain_order="left")
    picks = {side: top_rows(scan, codes, features, exemplars) for side, codes in (("a", codes_a), ("b", codes_b))}
    texts = exemplar_texts(store, a, b, picks, width)
    for side in ("a", "b"):
        ex = picks[side].join(texts[side], on=["feature", "doc_idx"], how="inner").sort(
            ["feature", "value", "doc_idx"], descending=[False, True, False]).select("feature", "snippet")
        col = f"exemplar_{side}"
        ex = ex.group_by("feature").agg(pl.col("snippet").alias(col))
        if exemplars == 1:
            ex = ex.with_columns(pl.col(col).list.first())
        frame = frame.join(ex, on="feature", how="left", maintain_order="left")
    return frame.select(COLUMNS)


def exemplar_texts(store: Store, a: Selection, b: Selection, picks: dict[str, pl.DataFrame],
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
        rows = store.exemplar_spans(cid, a.sae.sae_key, pairs)
        snippets = [snippet(t, s, e, width) for t, s, e in zip(rows["text"], rows["span_start"], rows["span_end"])]
        found = rows.select("feature", "doc_idx").with_columns(pl.Series("snippet", snippets, pl.Utf8))
        for s in sides:
            out[s] = found
    return out
