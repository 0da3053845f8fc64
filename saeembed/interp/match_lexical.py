"""The lexical matcher: features whose strongest exemplars fire on the query's own words.

A query like "mentions a deprecated parameter" names the word the property shows up as; a sentence
embedding of the query against feature descriptions dilutes it among the rest of the phrase. Here each
content word of the query (stop words dropped) is compared with the whole words each feature's top
exemplars in the corpus fire on; a feature scores the share of those exemplars whose word matches a
query word (same stem: a common prefix of at least 5 letters, or the whole shorter word), so a
feature that fires on "deprecated", "Deprecation", "deprecat|ed" scores near 1 for "deprecated".
"""

from __future__ import annotations

import os
import re

import numpy as np
import polars as pl

from saeembed.textwindow import word_bounds

STOP = frozenset("""a an and are as at be by for from has have in is it its of on or that the this to was were will
with about any some which who what when where does do did not no into out if than then them they their there these
those can could should would may might must one ones mentions mention mentioning says say about
""".split())
PREFIX = 5  # letters two words must share to count as one stem
EXEMPLARS = 10  # top exemplars per feature that are compared


def query_terms(query: str) -> list[str]:
    """The content words of a query, lower case, in order, without repeats."""
    out: list[str] = []
    for w in re.findall(r"[A-Za-z][A-Za-z0-9_]*", query.lower()):
        if len(w) >= 3 and w not in STOP and w not in out:
            out.append(w)
    return out


def same_stem(a: str, b: str) -> bool:
    """Two words count as one stem: a common prefix of PREFIX letters, or one is the start of the other."""
    if min(len(a), len(b)) < 3:
        return False
    n = len(os.path.commonprefix([a, b]))
    return n >= PREFIX or n == min(len(a), len(b))


_WORDS: dict[tuple, tuple[dict[int, list[str]], dict[int, int]]] = {}


def exemplar_words(store, corpus_id: int, sae_key: int, exemplars: int) -> tuple[dict[int, list[str]], dict[int, int]]:
    """({feature: the whole words its top exemplars fire on}, {feature: exemplars read}). Kept per process
    while the store's labels and exemplars are unchanged: a warm `saeembed serve` reads them once."""
    key = (str(store.path), corpus_id, sae_key, exemplars, store.description_fingerprint(sae_key))
    if key not in _WORDS:
        words: dict[int, list[str]] = {}
        seen: dict[int, int] = {}
        spans = store.exemplar_spans_text(corpus_id, sae_key, exemplars)
        for f, piece, s, e in spans.select("feature", "piece", "start", "end").iter_rows():
            seen[f] = seen.get(f, 0) + 1
            if piece is None or s is None or e is None or not 0 <= s < e <= len(piece):
                continue
            s, e = word_bounds(piece, s, e)
            words.setdefault(f, []).append(piece[s:e].lower())
        if len(_WORDS) >= 8:  # a few stores/corpora at most
            _WORDS.pop(next(iter(_WORDS)))
        _WORDS[key] = (words, seen)
    return _WORDS[key]


def forget_words() -> None:
    _WORDS.clear()


def lexical(store, sae, query, *, corpus=None, top=10, exemplars: int = EXEMPLARS, **_) -> pl.DataFrame:
    """feature, score (share of its top exemplars firing on a query word), label, evidence, lexical."""
    from saeembed.errors import InputError

    if corpus is None:
        raise InputError("feature matching by exemplar words needs a corpus (--corpus)")
    terms = query_terms(query)
    schema = {"feature": pl.Int64, "score": pl.Float64, "label": pl.Utf8, "evidence": pl.Utf8, "lexical": pl.Float64}
    if not terms:
        return pl.DataFrame(schema=schema)
    info = store.corpus(corpus)
    words, seen = exemplar_words(store, info.corpus_id, sae.sae_key, exemplars)
    matched = {w for w in {w for ws in words.values() for w in ws} if any(same_stem(w, t) for t in terms)}
    hits = {f: [w for w in ws if w in matched] for f, ws in words.items()}
    hits = {f: ws for f, ws in hits.items() if ws}
    if not hits:
        return pl.DataFrame(schema=schema)
    feats = sorted(hits)
    score = np.array([len(hits[f]) / max(seen[f], 1) for f in feats])
    labels = dict(store.labels(sae.sae_key, feats).select("feature", "label").iter_rows())
    return pl.DataFrame({
        "feature": feats, "score": score, "label": [labels.get(f) for f in feats],
        "evidence": [f"{len(hits[f])}/{seen[f]} top exemplars fire on “{', '.join(sorted(set(hits[f]))[:3])}”"
                     for f in feats],
        "lexical": score,
    }, schema=schema).sort("score", descending=True)
