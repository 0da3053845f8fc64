"""Offline phrase labels: what a feature fires on, said the way a person would glance at it.

The activating piece of each example (its highlighted word, grown over the symbols glued to it, so
"$18.75" not "18") is sorted into a kind — currency amount, percentage, year, number, time or date, web
address, @handle, #hashtag, punctuation mark, capitalised name, plain word — and the examples are
summarised by the kind most of them share:

    currency amounts ("$18.75", "$49")      "?" ending a question      years ("1998", "2004")
    "pandemic" and "covid"                  words like "insult…" ("insults", "insulting")

followed by the context the windows over-represent beside the piece (`near "police", "arrest"`).
"""

from __future__ import annotations

import re
from collections import Counter

_CURRENCY = re.compile(r"[$€£¥₹]\s?\d|\d\s?(?:dollars?|euros?|pounds?|cents?|usd|eur|gbp|yen|rupees?)\b", re.I)
_PERCENT = re.compile(r"\d\s?%|\d\s?(?:percent|per cent)\b", re.I)
_TIME = re.compile(r"\b\d{1,2}[:.]\d{2}\s?(?:am|pm)?\b|\b\d{1,2}\s?(?:am|pm)\b", re.I)
_MONTHS = ("january february march april may june july august september october november december "
           "jan feb mar apr jun jul aug sep sept oct nov dec monday tuesday wednesday thursday friday saturday "
           "sunday").split()
_URL = re.compile(r"https?://|www\.|\.(?:com|org|net|co|uk|io)\b", re.I)

# What a lone punctuation mark usually does; the phrase says it so a sentence model can match it.
PUNCT_ROLES = {
    "?": '"?" ending a question', "!": '"!" in exclamations', ".": '"." ending a sentence',
    ",": '"," between clauses and list items', ":": '":" introducing what follows',
    ";": '";" joining clauses', '"': 'quotation marks around quoted words', "'": "apostrophes and single quotes",
    "(": "parentheses around an aside", ")": "parentheses around an aside", "-": "hyphens and dashes",
    "–": "hyphens and dashes", "—": "hyphens and dashes", "/": '"/" between alternatives', "&": '"&" meaning and',
    "*": '"*" in emphasis or lists', "#": "hashtags", "@": "@-mentions of users", "…": "trailing ellipses",
}

KIND_NAMES = {
    "currency": "currency amounts", "percent": "percentages", "year": "years", "time": "times of day",
    "date": "dates and weekdays", "number": "numbers", "url": "web addresses", "handle": "@user handles",
    "hashtag": "hashtags", "name": "capitalised names", "emoji": "emoji and symbols",
    "placeholder": "unknown-word placeholders",
}
_SUFFIXES = ("ations", "ation", "ings", "ing", "edly", "ed", "ers", "er", "ies", "ly", "es", "s", "ness", "ment")


def piece_of(text: str, hl: tuple[int, int] | None) -> str:
    """The activating token's span grown over the non-space characters glued to it ("18" → "$18.75,"), with
    trailing sentence punctuation dropped unless the span is punctuation itself."""
    if not hl:
        return ""
    s, e = hl
    span = text[s:e]
    while s > 0 and not text[s - 1].isspace():
        s -= 1
    while e < len(text) and not text[e].isspace():
        e += 1
    piece = text[s:e]
    if "<unk>" in piece.lower():
        return "<unk>"
    if any(c.isalnum() for c in span):
        piece = piece.strip("\"'“”‘’()[]{}<>,;:!?.…")
        if len(piece) > len(span) + 12 and not any(ch in piece for ch in "$€£¥₹%@#"):
            piece = span  # a long glued run (a URL tail, a hyphen chain): keep the word
    return piece or span


def kind_of(piece: str, span: str) -> str:
    """What sort of thing the piece is (see KIND_NAMES; 'punct' and 'word' besides)."""
    p = piece.strip()
    if not p:
        return "word"
    if not any(c.isalnum() for c in span) and span.strip():
        return "emoji" if any(ord(c) > 0x2000 and c not in "–—…“”‘’" for c in span) else "punct"
    if p.lower() in ("<unk>", "unk", "[unk]", "<|endoftext|>"):
        return "placeholder"
    if _URL.search(p):
        return "url"
    if p.startswith("@") and len(p) > 1:
        return "handle"
    if p.startswith("#") and len(p) > 1:
        return "hashtag"
    if _CURRENCY.search(p):
        return "currency"
    if _PERCENT.search(p):
        return "percent"
    if _TIME.search(p):
        return "time"
    if p.lower().strip(".,") in _MONTHS:
        return "date"
    digits = re.sub(r"[^\d]", "", p)
    if digits:
        if len(digits) == 4 and p.strip(".,s'") == digits and 1500 <= int(digits) <= 2099:
            return "year"
        if len(digits) >= max(1, len(re.sub(r"\W", "", p)) // 2):
            return "number"
    return "word"


def stem(word: str) -> str:
    w = word.lower()
    for suf in _SUFFIXES:
        if len(w) - len(suf) >= 4 and w.endswith(suf):
            return w[: -len(suf)]
    return w


def _quoted(items, n: int = 3) -> str:
    return ", ".join(f'"{x}"' for x in items[:n])


def _is_name(examples) -> bool:
    """Capitalised mid-sentence (not after a sentence end) in most examples."""
    hits = 0
    for text, hl, piece in examples:
        before = text[: hl[0]].rstrip()
        if piece[:1].isupper() and piece[1:2].islower() and before and before[-1] not in ".!?\"“:":
            hits += 1
    return hits >= 0.6 * len(examples)


def what_fires(examples: list[tuple[str, tuple[int, int], str]], specific: dict[str, float]) -> tuple[str, str]:
    """(phrase, kind) for the activating pieces. examples: (window text, highlight, piece); specific:
    how specific each lower-cased word is to the feature against background text (higher: more)."""
    n = len(examples)
    kinds = Counter(kind_of(piece, text[hl[0]:hl[1]]) for text, hl, piece in examples)
    kind, k_n = kinds.most_common(1)[0]
    pieces = Counter(piece for _, _, piece in examples)
    if kind == "punct" and k_n >= 0.5 * n:
        marks = Counter(text[hl[0]:hl[1]].strip()[:1] for text, hl, _ in examples if text[hl[0]:hl[1]].strip())
        mark, m_n = marks.most_common(1)[0]
        if m_n >= 0.5 * n:
            return PUNCT_ROLES.get(mark, f'"{mark}"'), "punct"
        return "punctuation marks (" + _quoted([m for m, _ in marks.most_common(3)]) + ")", "punct"
    if kind not in ("word", "punct") and k_n >= 0.5 * n:
        shown = [p for p, _ in pieces.most_common() if kind_of(p, p) == kind or kind in ("name",)]
        return f"{KIND_NAMES[kind]} ({_quoted(shown or list(pieces), 2)})", kind
    words = Counter(piece.lower() for _, _, piece in examples)
    top, t_n = words.most_common(1)[0]
    if t_n >= 0.5 * n:
        second = [w for w, c in words.most_common(3)[1:] if c >= 0.15 * n]
        return _quoted([top] + second, 2).replace('", "', '" and "'), "word"
    # one token inside many different words ("hy" in "dehydration", "carbohydrates"): a word piece
    toks = Counter(text[hl[0]:hl[1]].strip().lower() for text, hl, _ in examples)
    tok, o_n = toks.most_common(1)[0]
    inside = [p for text, hl, p in examples if text[hl[0]:hl[1]].strip().lower() == tok and p.lower() != tok]
    if o_n >= 0.5 * n and len(inside) >= 0.5 * o_n and tok.isalnum():
        shown = [w for w, _ in Counter(p.lower() for p in inside).most_common(2)]
        return f'"{tok}" inside words ({_quoted(shown, 2)})', "subword"
    stems = Counter(stem(w) for w in words.elements())
    st, s_n = stems.most_common(1)[0]
    if s_n >= 0.5 * n and len({w for w in words if stem(w) == st}) > 1:
        forms = [w for w, _ in words.most_common() if stem(w) == st]
        return f'words like "{st}…" ({_quoted(forms, 2)})', "family"
    if _is_name(examples):
        return f"{KIND_NAMES['name']} ({_quoted([p for p, _ in pieces.most_common()], 3)})", "name"
    # several words: the ones most specific to the feature among those seen more than once
    seen = [w for w in words if words[w] >= 2] or list(words)
    ranked = sorted(seen, key=lambda w: (-(words[w] / n) * max(specific.get(w, 1.0), 0.1), w))
    return _quoted(ranked, 3), "words"


def topical(what: str, topic: list[str]) -> str:
    """A broad feature's phrase: the words its documents share first, then the words it fires on."""
    return f"words in texts about {_quoted(topic, 2)} ({what})"


def compose(what: str, context: list[str], where: str | None) -> str:
    """The label: what fires, the context words around it, and the kind of document when one dominates."""
    out = what
    if context:
        out += f" near {_quoted(context, 2)}"
    if where:
        out += f" ({where})"
    return out
