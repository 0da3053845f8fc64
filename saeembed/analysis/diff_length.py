"""Length control for diff: token lengths, length strata and the length summary.

Max-pooling makes long documents light up more features, so diff states how the sides' lengths
differ and, when they do, stratifies documents into token-length bins (pooled quantiles of
log(1 + n_tokens)) for the Cochran–Mantel–Haenszel test.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from saeembed.analysis.selection import Selection
from saeembed.stats import mann_whitney_p
from saeembed.store import Store


@dataclass
class Sides:
    """Per document of A and of B (in selection order): token length and length stratum."""

    la: np.ndarray
    lb: np.ndarray
    sa: np.ndarray
    sb: np.ndarray
    n_strata: int  # 1 + the highest stratum present


def token_lengths(store: Store, sae_key: int, corpus_id: int, doc_idx: np.ndarray) -> np.ndarray:
    """n_tokens by doc_idx (0 for a document this SAE has not encoded), covering every doc_idx given."""
    doc, n_tokens = store.token_counts(corpus_id, sae_key)
    size = int(max(doc.max(initial=-1), doc_idx.max(initial=-1))) + 1
    tokens = np.zeros(size, dtype=np.int32)
    tokens[doc] = n_tokens
    return tokens


def _edges(loglen: np.ndarray, bins: int) -> np.ndarray:
    """Stratum boundaries: pooled quantiles of log(1 + n_tokens) (a document on both sides counts twice)."""
    return np.unique(np.quantile(loglen, np.linspace(0, 1, bins + 1)[1:-1])) if bins > 1 else np.array([])


def strata(tokens: np.ndarray, parts: list[np.ndarray], bins: int) -> tuple[np.ndarray, int]:
    """Length strata over the documents of `parts`: stratum by doc_idx, and 1 + the highest present."""
    loglen = np.log1p(np.concatenate([tokens[p] for p in parts]).astype(np.float64))
    edges = _edges(loglen, bins)
    stratum = np.searchsorted(edges, np.log1p(tokens.astype(np.float64)), side="right").astype(np.int8)
    return stratum, int(np.searchsorted(edges, loglen, side="right").max()) + 1


def side_table(store: Store, a: Selection, b: Selection, bins: int) -> Sides:
    """Token lengths and strata of both sides' documents."""
    toks = {}
    for sel in (a, b):
        doc = np.concatenate([s.doc_idx for s in (a, b) if s.corpus.corpus_id == sel.corpus.corpus_id])
        if sel.corpus.corpus_id not in toks:
            toks[sel.corpus.corpus_id] = token_lengths(store, a.sae.sae_key, sel.corpus.corpus_id, doc)
    la, lb = toks[a.corpus.corpus_id][a.doc_idx], toks[b.corpus.corpus_id][b.doc_idx]
    loglen = np.log1p(np.concatenate([la, lb]).astype(np.float64))
    stratum = np.searchsorted(_edges(loglen, bins), loglen, side="right").astype(np.int8)
    return Sides(la, lb, stratum[: len(la)], stratum[len(la):], int(stratum.max()) + 1)


def lengths_overlap(sides: Sides) -> bool:
    """Whether some document of one side is as long as some document of the other (the ranges meet)."""
    if not len(sides.la) or not len(sides.lb):
        return False
    return bool(sides.la.min() <= sides.lb.max() and sides.lb.min() <= sides.la.max())


def length_summary(sides: Sides) -> dict:
    """Whether the sides' lengths differ clearly (Mann–Whitney p < 0.01 and medians more than 1.2×
    apart), a sentence saying so, and the numbers."""
    la, lb = sides.la, sides.lb
    med_a, med_b = float(np.median(la)), float(np.median(lb))
    p = mann_whitney_p(la, lb) if len(la) and len(lb) and (la.std() or lb.std() or la[0] != lb[0]) else 1.0
    ratio = (med_a + 1) / (med_b + 1)
    differ = p < 0.01 and not (1 / 1.2 <= ratio <= 1.2)
    note = (f"A's documents are {ratio:.2f}× as long as B's (median {med_a:.0f} vs {med_b:.0f} tokens, "
            f"Mann–Whitney p = {p:.2g})")
    note += ("; longer documents fire more features under max-pooling, so a second ranking controls for length"
             if differ else "; lengths are comparable")
    return {"differ": differ, "note": note, "table": {
        "median_tokens_a": med_a, "median_tokens_b": med_b, "mean_tokens_a": float(la.mean()),
        "mean_tokens_b": float(lb.mean()), "ratio": ratio, "p_value": p}}


def length_finding(lengths: dict, separability: dict | None) -> str | None:
    """The length difference stated as the diff's first finding, when it is clear (None otherwise)."""
    if not lengths["differ"]:
        return None
    t = lengths["table"]
    longer, shorter = ("A", "B") if t["ratio"] >= 1 else ("B", "A")
    times = t["ratio"] if t["ratio"] >= 1 else 1 / t["ratio"]
    text = (f"{longer}'s documents are {times:.1f}× as long as {shorter}'s (median {t['median_tokens_a']:.0f} vs "
            f"{t['median_tokens_b']:.0f} tokens)")
    auroc = (separability or {}).get("auroc_length")
    if auroc is not None:
        text += f"; length alone tells the sides apart with AUROC {max(auroc, 1 - auroc):.2f}"
    if lengths.get("no_shared_bin"):  # no length bin holds both sides: nothing can be compared within one
        return text + "; every document of one side is longer than every document of the other, so what differs " \
                      "cannot be told apart from length"
    return text + ("; the raw ranking shows what differs, length included; the length-controlled ranking what "
                   "differs beyond length")
