"""The literal-word ranking that hybrid search fuses in: documents that contain the query's own words.

A property like "mentions a deprecated parameter" shows up as a word; when no SAE feature has that word
among its exemplars and the sentence embedding dilutes it, a document that says "deprecated" can still
rank low. Here each content word of the query (match_lexical.query_terms) becomes a stem (its first five
letters, or the whole shorter word) matched at a word start; a document scores the sum of the inverse
document frequencies of the stems it contains, so rare words weigh more, and among equal scores shorter
documents rank first (a long document contains every word sooner or later). Documents with none of the
stems are not ranked.
"""

from __future__ import annotations

import math
import re

import numpy as np

from saeembed.interp.match_lexical import PREFIX, query_terms

MAX_TERMS = 6


def stems(query: str) -> list[str]:
    """The query's content words as the stems matched: 'deprecated' -> 'deprec'[:5] = 'depre'."""
    out: list[str] = []
    for w in query_terms(query or "")[:MAX_TERMS]:
        s = w[:PREFIX]
        if s not in out:
            out.append(s)
    return out


def word_ranking(store, corpus_id: int, query: str, doc_idx: np.ndarray | None, n_docs: int,
                 depth: int) -> tuple[np.ndarray, np.ndarray]:
    """(doc_idx, score) best first, at most `depth`: documents holding the query's stems, scored by idf."""
    score: dict[int, float] = {}
    length: dict[int, int] = {}
    pool = None if doc_idx is None else doc_idx.tolist()
    for stem in stems(query):
        pattern = r"\b" + re.escape(stem)  # query_terms keeps [a-z0-9_] only: the pattern is a literal prefix
        hits = store.docs_with_word(corpus_id, pattern, pool)
        if hits.is_empty():
            continue
        idf = math.log((n_docs + 1) / (hits.height + 0.5))
        if idf <= 0:  # in (nearly) every document: says nothing
            continue
        for d, n in hits.iter_rows():
            score[d] = score.get(d, 0.0) + idf
            length[d] = n
    order = sorted(score, key=lambda d: (-score[d], length[d], d))[:depth]
    return np.asarray(order, np.int64), np.asarray([score[d] for d in order], np.float64)
