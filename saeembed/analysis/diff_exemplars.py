"""Labels and exemplar snippets for diff's table: the strongest rows of each feature on each side,
as found by the scan, with a text window around the span of each row's strongest token, and the token
those rows peak on when most of them agree (saeembed.analysis.local_tokens)."""

from __future__ import annotations

import polars as pl

from saeembed.analysis.diff_scan import Scan, top_rows
from saeembed.analysis.local_tokens import ROWS, local_hint, peak_token
from saeembed.analysis.selection import Selection
from saeembed.store import Store
from saeembed.textwindow import snippet

COLUMNS = ["ranking", "feature", "label", "freq_a", "freq_b", "diff", "ratio", "p_value", "q_value", "more_in",
           "diff_adj", "mean_a", "mean_b", "docs_a", "docs_b", "p_raw", "q_raw", "p_adj", "q_adj",
           "generic", "generic_reason", "here", "exemplar_a", "exemplar_b"]


HINTED = 25  # rows per ranking and direction that get the local hint


def scan_rows(exemplars: int) -> int:
    """Strongest rows the scan keeps per (code, feature): the snippets' and the local hint's (none when
    no snippet is asked for: then no text is read at all)."""
    return max(exemplars, ROWS) if exemplars > 0 else 0


def annotate(store: Store, a: Selection, b: Selection, frame: pl.DataFrame, scan: Scan, codes_a: list[int],
             codes_b: list[int], *, exemplars: int, width: int) -> pl.DataFrame:
    """The diff table (rows per ranking: see diff_rank) with each feature's label, `exemplars` snippets
    per side (one: a string, more: a list) and the local hint from the side it is more frequent on, in
    the published column order."""
    features = frame["feature"].unique(maintain_order=True).to_list()  # a feature may be in both rankings
    labels = store.labels(a.sae.sae_key, features).select("feature", "label")
    frame = frame.join(labels, on="feature", how="left", maintain_order="left")
    hinted = _hinted(frame)
    picks = {}
    for side, codes in (("a", codes_a), ("b", codes_b)):
        mine = [f for f in features if (f, side) in hinted]
        rest = [f for f in features if (f, side) not in hinted]
        picks[side] = pl.concat([top_rows(scan, codes, mine, scan_rows(exemplars)), top_rows(scan, codes, rest, exemplars)],
                                how="vertical_relaxed")
    spans = exemplar_spans(store, a, b, picks)
    hints = {}
    for side in ("a", "b"):
        rows = picks[side].join(spans[side], on=["feature", "doc_idx"], how="inner").sort(
            ["feature", "value", "doc_idx"], descending=[False, True, False])
        tokens = rows.group_by("feature", maintain_order=True).agg(
            pl.struct("text", "span_start", "span_end").alias("rows"))
        hints[side] = {f: [peak_token(r["text"], r["span_start"], r["span_end"]) for r in rs]
                       for f, rs in zip(tokens["feature"].to_list(), tokens["rows"].to_list())}
        rows = rows.group_by("feature", maintain_order=True).head(exemplars)
        snippets = [snippet(t, s, e, width) for t, s, e in zip(rows["text"], rows["span_start"], rows["span_end"])]
        col = f"exemplar_{side}"
        ex = rows.select("feature").with_columns(pl.Series(col, snippets, pl.Utf8)).group_by(
            "feature", maintain_order=True).agg(pl.col(col))
        if exemplars == 1:
            ex = ex.with_columns(pl.col(col).list.first())
        frame = frame.join(ex, on="feature", how="left", maintain_order="left")
    here = [local_hint(hints["a" if more == "A" else "b"].get(f, []), lab)
            for f, lab, more in zip(frame["feature"].to_list(), frame["label"].to_list(), frame["more_in"].to_list())]
    return frame.with_columns(pl.Series("here", here, pl.Utf8)).select(COLUMNS)


def _hinted(frame: pl.DataFrame) -> set[tuple[int, str]]:
    """(feature, side) of the rows that get the local hint: the first HINTED of each ranking and direction,
    the rows a table shows (a diff asked for every feature would otherwise read 10 documents of each)."""
    out = set()
    for (_, more), part in frame.group_by("ranking", "more_in", maintain_order=True):
        out |= {(f, "a" if more == "A" else "b") for f in part["feature"].head(HINTED).to_list()}
    return out


def exemplar_spans(store: Store, a: Selection, b: Selection, picks: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    """(feature, doc_idx, span_start, span_end, text) for the picked rows of each side: the span of the
    row's strongest token from the activations, the text from the documents (only those rows are read)."""
    empty = pl.DataFrame(schema={"feature": pl.Int64, "doc_idx": pl.Int32, "span_start": pl.Int32,
                                 "span_end": pl.Int32, "text": pl.Utf8})
    out = {"a": empty, "b": empty}
    by_corpus: dict[int, list[str]] = {}
    for side, sel in (("a", a), ("b", b)):
        by_corpus.setdefault(sel.corpus.corpus_id, []).append(side)
    for cid, sides in by_corpus.items():
        pairs = pl.concat([picks[s].select("feature", "doc_idx") for s in sides]).unique()
        if pairs.is_empty():
            continue
        found = store.exemplar_spans(cid, a.sae.sae_key, pairs)
        for s in sides:
            out[s] = found
    return out
