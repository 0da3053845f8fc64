"""What a feature peaks on in the documents at hand, shown beside its label when one token dominates.

A label (the atlas's, or one made on other data) says what a feature does on the text it was made from.
On another corpus the same feature may peak somewhere else: a feature the atlas names "debt" (from news
text) fires on the «CV» of every "CVE-…" line in Debian changelogs. So listings add, beside the label,
the token that a feature's strongest rows here peak on, when most of them agree: `«CV» 10/10` (10 of its
10 strongest documents on that side peak on «CV»). The label is never replaced; nothing is shown when the
rows do not agree or the label already names the token.
"""

from __future__ import annotations

import re
from collections import Counter

ROWS = 10  # strongest documents per feature read for the hint
_MIN_ROWS = 5  # fewer rows than this say too little
_MAX_TOKEN = 24  # characters of a token shown


def peak_token(text: str, start, end) -> str | None:
    """The text of a row's peak token (its span in the document), on one line; None without a span."""
    if start is None or end is None or end <= start:
        return None
    token = " ".join(text[int(start) : int(end)].split())
    return token[:_MAX_TOKEN] or None


def local_hint(tokens: list[str | None], label: str | None = None) -> str | None:
    """`«CV» 10/10` (or `«1» 4/10, «2» 3/10`) from the peak tokens of a feature's strongest rows: the tokens
    taking at least two rows each, commonest first (up to 3), when the commonest takes at least half of
    them. None when the rows disagree, are too few, or `label` already names every token shown."""
    seen = [t for t in tokens if t]
    if len(seen) < _MIN_ROWS:
        return None
    counts, spelling = Counter(), {}
    for t in seen:
        counts[t.lower()] += 1
        spelling.setdefault(t.lower(), Counter())[t] += 1
    top = [(key, n) for key, n in counts.most_common(3) if n >= 2]
    if not top or top[0][1] * 2 < len(seen):
        return None
    if label and all(_names(label, key) for key, _ in top):
        return None
    return ", ".join(f"«{spelling[key].most_common(1)[0][0]}» {n}/{len(seen)}" for key, n in top)


def _names(label: str, token: str) -> bool:
    """Whether the label already says the token: as a whole word, or (3 characters or more) as a piece of
    one of its words («202» of "2021"); a mark anywhere in it."""
    label = label.lower()
    if not re.fullmatch(r"\w+", token):
        return token in label
    if len(token) >= 3:
        return any(token in word for word in re.findall(r"\w+", label))
    return token in re.findall(r"\w+", label)


def hint_tokens(here: str | None) -> str | None:
    """The tokens of a hint without their counts, for running text: "«CV» 10/10" -> "«CV»"."""
    if not here:
        return None
    return ", ".join(part.rsplit(" ", 1)[0] for part in here.split(", "))
