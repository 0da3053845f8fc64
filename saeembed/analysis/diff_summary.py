"""Written hypotheses from diffs of any two sides (corpora, --where/--vs slices, each --by group):
one set per ranking (what differs; what differs beyond length), each hypothesis with its features as
evidence and the share of each side's documents firing any of them, counted here on that side. Offline
hypotheses are written in words from the features' labels ("A mentions currency amounts far more often
(63% vs 4%)")."""

from __future__ import annotations

import polars as pl

from saeembed.analysis.diff import DiffResult
from saeembed.analysis.local_tokens import hint_tokens
from saeembed.analysis.names import short_label
from saeembed.analysis.selection import Selection, embedding_matrix
from saeembed.store import Store


def _share(store: Store, sel: Selection, features: list[int]) -> float:
    """Share of the side's documents where any of `features` fires (CSR of those features only)."""
    if not sel.n_docs or not features:
        return 0.0
    x = embedding_matrix(store, sel, features=features, binary=True)
    return float((x[:, features].getnnz(axis=1) > 0).mean())


def summarize(store: Store, results: dict[str, DiffResult], *, llm=None, top: int = 15,
              max_hypotheses: int = 5) -> pl.DataFrame:
    """Hypotheses for each diff in `results` (group name -> result; "" for a single diff) and each of
    its rankings: group, ranking, hypothesis, direction, features, evidence, share_a, share_b, source."""
    from saeembed.interp.assist import summarize_diff

    out = []
    for group, r in results.items():
        a, b = r.a, r.b
        for ranking in r.frame["ranking"].unique(maintain_order=True).to_list():
            rows = r.frame.filter(pl.col("ranking") == ranking)
            h = summarize_diff(store, rows, corpus_a=a.name, corpus_b=b.name, sae_info=a.sae, llm=llm, top=top,
                               max_hypotheses=max_hypotheses, freq_a="freq_a", freq_b="freq_b", sort=False,
                               share=lambda side, fs: _share(store, a if side == "a" else b, fs))
            h = _worded(h, rows, a.name, b.name)
            out.append(h.with_columns(group=pl.lit(group), ranking=pl.lit(ranking)).select(
                "group", "ranking", pl.all().exclude("group", "ranking")))
    return pl.concat(out) if out else pl.DataFrame()


def _degree(more: float, less: float) -> str:
    ratio = more / max(less, 1e-9)
    return "far more often" if ratio >= 3 else "more often" if ratio >= 1.5 else "somewhat more often"


def hypothesis_text(side: str, label, feature: int, more: float, less: float, here: str | None = None) -> str:
    """An offline hypothesis in words from a feature's label: `support_tickets mentions "$" far more often
    (63% vs 4%)` (more: the share of that side's documents where it fires; less: the other side's), with
    the token it peaks on there when the label does not say it (`mentions "debt" (here «CV») …`)."""
    what = short_label(label) or f"feature #{feature}"
    if here:
        what += f" (here {hint_tokens(here)})"
    return f"{side} mentions {what} {_degree(more, less)} ({more:.0%} vs {less:.0%})"


def _worded(h: pl.DataFrame, rows: pl.DataFrame, name_a: str, name_b: str) -> pl.DataFrame:
    """Offline hypotheses (one feature each) rewritten in words from the diff's own labels and shares."""
    if h.is_empty():
        return h
    cols = ["feature", "label", "freq_a", "freq_b"] + (["here"] if "here" in rows.columns else [])
    by = {int(r["feature"]): r for r in rows.select(cols).iter_rows(named=True)}
    texts = []
    for text, source, feats in h.select("hypothesis", "source", "features").iter_rows():
        r = by.get(int(feats[0])) if feats and len(feats) == 1 else None
        if r is None or not source.startswith("offline"):
            texts.append(text)
            continue
        a_more = r["freq_a"] >= r["freq_b"]
        more, less = (r["freq_a"], r["freq_b"]) if a_more else (r["freq_b"], r["freq_a"])
        texts.append(hypothesis_text(name_a if a_more else name_b, r["label"], r["feature"], more, less, r.get("here")))
    return h.with_columns(hypothesis=pl.Series(texts, dtype=pl.Utf8))
