"""What the documents of a broad feature share: words their whole texts over-represent.

A broad feature fires on many different words (no word, stem or token kind covers half its examples);
listing three of them names one arbitrary word. What such a feature's activating documents often share
is a topic: words that many of them contain and background documents rarely do ("battery", "camera"
for a feature on product reviews, whatever word it fires on). Documents count each word once; a word
is kept when many of the feature's documents contain it, background documents rarely do, and similar
non-activating documents (the ones firing the same other features) less often.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field

from saeembed.encode.token_kinds import STOP_WORDS

_WORD = re.compile(r"[^\W\d_]{3,}", re.U)
_PLACEHOLDERS = {"unk"}
DOC_CHARS = 4000  # a document's head: enough for its topic, bounded cost on long texts


def doc_words(text: str) -> set[str]:
    """The distinct lower-cased words (letters only, ≥ 3 long, no stop word) of a document's head."""
    return {w for w in (m.lower() for m in _WORD.findall(text[:DOC_CHARS]))
            if w not in STOP_WORDS and w not in _PLACEHOLDERS}


@dataclass
class DocStats:
    """Document frequencies of words over whole documents (each text counts a word once)."""

    n: int = 0
    counts: Counter = field(default_factory=Counter)

    @classmethod
    def of(cls, texts, words=doc_words):
        """Counted over `texts`, a text's words being words(text)."""
        st = cls()
        for t in texts:
            st.n += 1
            st.counts.update(set(words(t)))
        return st

    def share(self, word: str) -> float:
        return (self.counts.get(word, 0) + 0.5) / (self.n + 1)


def topic_words(docs: list[str], background: DocStats, *, similar: DocStats | None = None,
                exclude: set[str] = frozenset(), n: int = 2, min_share: float = 0.35, min_lift: float = 4.0,
                max_base: float = 0.05, min_lift_similar: float = 3.0, min_docs: int = 4) -> list[str]:
    """Words the feature's documents over-represent, strongest first: in ≥ min_share of them, rare in
    background documents (≤ max_base; common words like "using" say nothing about a topic) and ≥ min_lift
    × that share, and ≥ min_lift_similar × their share in `similar` non-activating documents (a word that
    similar documents carry as often does not tell the feature's documents apart)."""
    if len(docs) < min_docs or background.n == 0:
        return []
    counts = Counter(w for t in docs for w in doc_words(t))
    scored = []
    for w, c in counts.items():
        p = c / len(docs)
        if w in exclude or c < min_docs or p < min_share:
            continue
        q = background.share(w)
        if q > max_base or p < min_lift * q:
            continue
        if similar is not None and similar.n and p < min_lift_similar * similar.share(w):
            continue
        scored.append((p * math.log(p / q), w))
    scored.sort(key=lambda x: (-x[0], x[1]))
    return [w for _, w in scored[:n]]
