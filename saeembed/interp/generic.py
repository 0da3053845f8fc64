"""Labels for generic features (ones that fire on most documents): what kind of token carries them.

A feature that fires on nearly every text is not about a word; its top windows' words are a random draw
of text (a list like "bureaucratic", "burst", "eminent" misleads). What such features share is the kind
of token they peak on: the first word of a text, sentence-final ".", the word before it, a noun after
"the", a function word. Each activating example (top windows and quantile samples: the typical document
too, not only the strongest) is sorted into these kinds; the kind the examples over-represent most
against background tokens (random firing tokens of random documents) names the feature:

    generic: sentence-final "."      generic: nouns after "the"      generic: any text, strongest on the first word

When the top windows agree on one thing (a word, a word family, a mark), it follows: `generic: content
words, strongest on "group"`; a list of unrelated top words does not.
"""

from __future__ import annotations

import math
import re
from collections import Counter

from saeembed.encode.token_kinds import STOP_WORDS
from saeembed.interp.examples import Example
from saeembed.interp.phrases import PUNCT_ROLES, kind_of, piece_of

_DETERMINERS = ("the", "a", "an", "this", "that", "these", "those", "its", "their", "his", "her", "our", "your",
                "my", "each", "every", "any", "some")
_LAST_WORD = re.compile(r"([^\W_]+)\W*$", re.U)
_ENDS = ".!?"

# kind → how the label says it ({top}: the commonest determiner or mark the examples show)
PHRASES = {
    "first": "any text, strongest on the first word",
    "mark_end": 'sentence-final "{top}"',
    "mark": "{role}",  # a mark without a known role reads '">" marks'
    "word_end": "the last word of a sentence",
    "sentence_start": "the first word of a sentence",
    "after_det": 'nouns after "{top}"',
    "function": "function words",
    "number": "numbers",
    "name": "capitalised names",
    "placeholder": "unknown-word placeholders",
    "content": "content words",
}


def token_kinds(ex: Example) -> dict[str, str]:
    """The kinds the example's activating token has ({kind: detail}); an example can have several."""
    span = ex.tok or ex.hl
    if not span:
        return {}
    text = ex.text
    s, e = span
    tok = text[s:e].strip()
    if not tok:
        return {}
    before, after = text[:s], text[e:]
    piece = piece_of(text, span)
    out: dict[str, str] = {}
    if not before.strip():
        out["first"] = ""
    prev = before.rstrip()
    if prev[-1:] in _ENDS + ":" or not prev:
        out["sentence_start"] = ""
    kind = kind_of(piece, tok)
    if kind == "punct":
        mark = tok[:1]
        ends = mark in _ENDS and (not after.strip() or after[:1].isspace())
        out["mark_end" if ends else "mark"] = mark
        return out
    # a word that ends its sentence: ".", "!" or "?" right after it, then a space or the end
    rest = text[(ex.hl or span)[1]:].lstrip("\"')]”’")
    if rest[:1] in tuple(_ENDS) and rest[1:2] in ("", " "):
        out["word_end"] = ""
    if kind == "placeholder":
        out["placeholder"] = ""
        return out
    if kind in ("number", "year", "percent", "currency"):
        out["number"] = ""
        return out
    word = piece.lower().strip(".,;:!?\"'")
    m = _LAST_WORD.search(prev)
    if m and m.group(1).lower() in _DETERMINERS and prev.endswith(m.group(1)):
        out["after_det"] = m.group(1).lower()
    if word in STOP_WORDS:
        out["function"] = word
    elif piece[:1].isupper() and "sentence_start" not in out:
        out["name"] = ""
    else:
        out["content"] = ""
    return out


_LISTS = ("words", "name", "topic")  # phrases listing a few of many words: no one thing the top windows show


def generic_label(kind_phrase: tuple[str, str], top: tuple[str, str]) -> str:
    """The phrase after "generic: ": the kind of token (kind_phrase: generic_phrase's (phrase, kind)), then
    what the top windows show when they agree on it (top: (what_fires phrase, kind) of the top windows
    alone; a list of unrelated words there is the random draw of text this label avoids)."""
    (phrase, kind), (what, top_kind) = kind_phrase, top
    if not what or top_kind in _LISTS or kind == "word" or (top_kind == "punct" and kind in ("mark", "mark_end")):
        return phrase
    if top_kind == kind or (kind == "number" and top_kind in ("year", "percent", "currency")):
        return f"{what}" if kind != "number" else f"{phrase} ({what.split('(', 1)[-1].rstrip(')')})"
    if kind == "first":
        return f"{phrase} ({what})"
    return f"{phrase}, strongest on {what}"


def generic_phrase(positives: list[Example], background: list[Example], *, min_share: float = 0.35,
                   min_lift: float = 1.3) -> tuple[str, str]:
    """(phrase after "generic: ", kind) for a feature that fires on most texts. The top windows and the
    typical (quantile) ones weigh equally, so a kind must hold for both the feature's strongest and its
    everyday activations; a kind wins by share × log(share / background share)."""
    groups = [[e for e in positives if e.kind == "top"], [e for e in positives if e.kind != "top"]]
    groups = [g for g in groups if g] or [positives]
    shares: Counter = Counter()
    details: dict[str, Counter] = {}
    for g in groups:
        for ex in g:
            for k, d in token_kinds(ex).items():
                shares[k] += 1 / len(g) / len(groups)
                details.setdefault(k, Counter())[d] += 1
    words: Counter = Counter()  # one word carrying most of both groups names the feature itself
    for g in groups:
        for ex in g:
            span = ex.tok or ex.hl
            if span and ex.text[span[0]:span[1]].strip():
                words[piece_of(ex.text, span).lower()] += 1 / len(g) / len(groups)
    if words:
        (w, p), *rest = words.most_common(2)
        if p >= 0.5 and any(c.isalnum() for c in w):
            also = [x for x, q in rest if q >= 0.15]
            return " and ".join(f'"{x}"' for x in [w] + also), "word"
    bg = Counter(k for ex in background for k in token_kinds(ex))
    n_bg = max(len(background), 1)
    best, best_s = None, 0.0
    for k, p in shares.items():
        q = (bg[k] + 0.5) / (n_bg + 1)
        if p >= min_share and p >= min_lift * q:
            s = p * math.log(p / q)
            if s > best_s:
                best, best_s = k, s
    if best is None:
        return "any text", "any"
    top = details[best].most_common(1)[0][0]
    phrase = PHRASES[best].format(top=top, role=PUNCT_ROLES.get(top, f'"{top}" marks'))
    if best == "function":  # which function words, when a few carry it
        common = [w for w, c in details[best].most_common(2) if c >= 0.2 * sum(details[best].values())]
        if common:
            phrase += " (" + ", ".join(f'"{w}"' for w in common) + ")"
    return phrase, best

