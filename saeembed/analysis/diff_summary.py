"""Written hypotheses from diffs of any two sides (corpora, --where/--vs slices, each --by group):
one set per ranking (what differs; what differs beyond length), each hypothesis with its features as
evidence and the share of each side's documents firing any of them, counted here on that side."""

from __future__ import annotations

import polars as pl

from saeembed.analysis.diff import DiffResult
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
            out.append(h.with_columns(group=pl.lit(group), ranking=pl.lit(ranking)).select(
                "group", "ranking", pl.all().exclude("group", "ranking")))
    return pl.concat(out) if out else pl.DataFrame()
