"""A cluster's name in words: the words its documents use far more often than the rest of the selection.

Feature labels name what a feature fires on anywhere; a cluster is a group of *these* documents, so its
name comes from them (as c-TF-IDF does for topic models): a word counts once per document; a word names
the cluster when at least `min_share` of the cluster's documents use it and it is at least `min_lift`
times as common there as outside; the strongest (share in minus share out) come first. Large selections
are sampled (seeded) so naming stays cheap.
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np

from saeembed.analysis.selection import Selection
from saeembed.store import Store

_WORD = re.compile(r"[^\W\d_][^\W_]*(?:['’][^\W_]+)?", re.U)
STOP = frozenset("""a about above after again against all am an and any are as at be because been before being
below between both but by can could did do does doing down during each few for from further had has have having
he her here hers herself him himself his how i if in into is it its itself just me more most my myself no nor not
now of off on once only or other our ours ourselves out over own same she should so some such than that the their
theirs them themselves then there these they this those through to too under until up very was we were what when
where which while who whom why will with would you your yours yourself yourselves also get got one ones like
i'm it's don't can't i've i'd i'll you're that's there's isn't wasn't didn't doesn't let let's
""".split())
SAMPLE = 2000  # documents read per cluster and for the rest


def cluster_words(store: Store, sel: Selection, labels: np.ndarray, *, n: int = 3, min_share: float = 0.2,
                  min_lift: float = 2.0, seed: int = 0) -> dict[int, list[str]]:
    """{cluster: up to `n` words that set it apart} for every cluster (noise excluded); [] where none does."""
    rng = np.random.default_rng(seed)
    ids = sorted(int(c) for c in np.unique(labels) if c >= 0)
    picked: dict[int, np.ndarray] = {}
    for c in ids + [-2]:  # -2: everything, the background each cluster is compared with
        rows = np.flatnonzero(labels == c) if c != -2 else np.arange(len(labels))
        picked[c] = rows if len(rows) <= SAMPLE else np.sort(rng.choice(rows, SAMPLE, replace=False))
    wanted = sorted({int(sel.doc_idx[r]) for rows in picked.values() for r in rows})
    texts = dict(store.documents(sel.corpus, metadata=False, doc_idx=wanted).select("doc_idx", "text").iter_rows())
    words = {i: doc_words(texts.get(i) or "") for i in wanted}
    out: dict[int, list[str]] = {}
    for c in ids:
        inside = [int(sel.doc_idx[r]) for r in picked[c]]
        member = set(np.flatnonzero(labels == c).tolist())
        outside = [int(sel.doc_idx[r]) for r in picked[-2] if r not in member]
        out[c] = distinctive(inside, outside, words, n=n, min_share=min_share, min_lift=min_lift)
    return out


def doc_words(text: str) -> set[str]:
    """The content words of a document, lower case, each once."""
    return {w for w in (m.lower() for m in _WORD.findall(text)) if len(w) >= 3 and w not in STOP}


def distinctive(inside: list[int], outside: list[int], words: dict[int, set[str]], *, n: int, min_share: float,
                min_lift: float) -> list[str]:
    if not inside:
        return []
    df_in = Counter(w for i in inside for w in words[i])
    df_out = Counter(w for i in outside for w in words[i])
    n_in, n_out = len(inside), max(len(outside), 1)
    scored = []
    for w, k in df_in.items():
        share_in = k / n_in
        share_out = (df_out.get(w, 0) + 0.5) / (n_out + 1)  # half a count: a word absent outside is not infinite
        if k >= 2 and share_in >= min_share and share_in >= min_lift * share_out:
            scored.append((share_in - share_out, share_in, w))
    scored.sort(key=lambda t: (-t[0], -t[1], t[2]))
    return [w for _, _, w in scored[:n]]
