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

from saeembed.store import Store

ROWS = 10  # strongest documents per feature read for the hint
_MIN_ROWS = 5  # fewer rows than this say too little
_MAX_TOKEN = 24  # characters of a token shown


def peak_token(text: str, start, end) -> str | None:
    """The text of a row's peak token (its span in the document), on one line; None without a span."""
    if start is None or end is None or end <= start:
        return None
    return _one_line(text[int(start) : int(end)])


def _one_line(token: str | None) -> str | None:
    """A token as shown: whitespace folded, at most _MAX_TOKEN characters; None when empty."""
    return " ".join((token or "").split())[:_MAX_TOKEN] or None


def local_hint(tokens: list[str | None], label: str | None = None) -> str | None:
    """`«CV» 10/10` (or `«1» 4/10, «2» 3/10`) from the peak tokens of a feature's strongest rows: the tokens
    taking at least two rows each, commonest first (up to 3), when the commonest takes at least half of
    them. None when the rows disagree, are too few, or `label` already names every token shown."""
    seen = [t for t in tokens if t]
    if dominant(seen) is None:
        return None
    counts, spelling = Counter(), {}
    for t in seen:
        counts[t.lower()] += 1
        spelling.setdefault(t.lower(), Counter())[t] += 1
    top = [(key, n) for key, n in counts.most_common(3) if n >= 2]
    if label and all(_names(label, key) for key, _ in top):
        return None
    return ", ".join(f"«{spelling[key].most_common(1)[0][0]}» {n}/{len(seen)}" for key, n in top)


def dominant(tokens: list[str | None]) -> str | None:
    """The token (lower-cased) that at least half of the rows peak on, from at least 5 rows; else None."""
    seen = [t.lower() for t in tokens if t]
    if len(seen) < _MIN_ROWS:
        return None
    token, n = Counter(seen).most_common(1)[0]
    return token if n * 2 >= len(seen) and n >= 2 else None


def hints(peaks: dict[int, list[str | None]], labels: dict[int, str | None]) -> dict[int, str]:
    """{feature: hint} for the features of `labels` ({feature: its label}) whose peak tokens give one."""
    return {f: hint for f, lab in labels.items() if (hint := local_hint(peaks.get(f, []), lab))}


def corpus_hints(store: Store, sae_key: int, corpus: str | None, labels: dict[int, str | None]) -> dict[int, str]:
    """{feature: hint} from each feature's stored exemplars (its strongest documents in the corpus, or in
    every corpus without one), for the features of `labels` ({feature: its label}) that get one."""
    return hints(corpus_peaks(store, sae_key, corpus, list(labels)), labels)


def corpus_peaks(store: Store, sae_key: int, corpus: str | None, features: list[int]) -> dict[int, list[str | None]]:
    """{feature: the peak token of each of its stored exemplars (strongest first)} in the corpus."""
    if not features:
        return {}
    return exemplar_peaks(store.exemplar_snippets(sae_key, features, corpus=corpus, per_feature=ROWS))


def exemplar_peaks(rows) -> dict[int, list[str | None]]:
    """{feature: its rows' peak tokens, in row order} from Store.exemplar_snippets rows (feature, peak_token)."""
    tokens: dict[int, list] = {}
    for f, token in zip(rows["feature"].to_list(), rows["peak_token"].to_list()):
        tokens.setdefault(int(f), []).append(_one_line(token))
    return tokens


def _names(label: str, token: str) -> bool:
    """Whether the label already says the token: as a whole word; (3 characters or more) as a piece of one
    of its words («202» of "2021"); or as one of its words (4 or more) and an ending («requests» of
    "request"). A mark: anywhere in it."""
    label = label.lower()
    if not re.fullmatch(r"\w+", token):
        return token in label
    words = re.findall(r"\w+", label)
    if len(token) >= 3:
        return any(token in word or (len(word) >= 4 and token.startswith(word)) for word in words)
    return token in words


def hint_tokens(here: str | None) -> str | None:
    """The tokens of a hint without their counts, for running text: "«CV» 10/10" -> "«CV»"."""
    if not here:
        return None
    return ", ".join(part.rsplit(" ", 1)[0] for part in here.split(", "))
