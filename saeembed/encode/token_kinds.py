"""Which tokens are function tokens, for pooling that skips them (EncodeConfig.skip_tokens = "function").

A content token is a function token when its whole text, lower-cased, is an English stop word, or when
it has no letter or digit (punctuation, symbols). The decision reads the token's characters in the
document (its character span), not the tokenizer's spelling of it, so WordPiece `##x`, GPT `Ġx` and
SentencePiece `▁x` tokens are judged alike. A token that is only part of a word (a letter or digit of
the same word touches its span) is never a function token: the pieces of a rare word are its content.
"""

from __future__ import annotations

import numpy as np

from saeembed.errors import InputError

SKIP_CHOICES = ("none", "function")
RECOMMENDATION_KEY = "saeembed_pooling"  # in an SAE's config: {"skip_tokens": "function"}

# scikit-learn's ENGLISH_STOP_WORDS (the list the default-SAE selection benchmark measured with), kept
# here so a stored encoding's pooling never changes with another scikit-learn release.
STOP_WORDS = frozenset((
    "a about above across after afterwards again against all almost alone along already also although always "
    "am among amongst amoungst amount an and another any anyhow anyone anything anyway anywhere are around as "
    "at back be became because become becomes becoming been before beforehand behind being below beside "
    "besides between beyond bill both bottom but by call can cannot cant co con could couldnt cry de describe "
    "detail do done down due during each eg eight either eleven else elsewhere empty enough etc even ever "
    "every everyone everything everywhere except few fifteen fifty fill find fire first five for former "
    "formerly forty found four from front full further get give go had has hasnt have he hence her here "
    "hereafter hereby herein hereupon hers herself him himself his how however hundred i ie if in inc indeed "
    "interest into is it its itself keep last latter latterly least less ltd made many may me meanwhile might "
    "mill mine more moreover most mostly move much must my myself name namely neither never nevertheless next "
    "nine no nobody none noone nor not nothing now nowhere of off often on once one only onto or other others "
    "otherwise our ours ourselves out over own part per perhaps please put rather re same see seem seemed "
    "seeming seems serious several she should show side since sincere six sixty so some somehow someone "
    "something sometime sometimes somewhere still such system take ten than that the their them themselves "
    "then thence there thereafter thereby therefore therein thereupon these they thick thin third this those "
    "though three through throughout thru thus to together too top toward towards twelve twenty two un under "
    "until up upon us very via was we well were what whatever when whence whenever where whereafter whereas "
    "whereby wherein whereupon wherever whether which while whither who whoever whole whom whose "
    "why will with within without would yet you your yours yourself yourselves "
).split())


def function_tokens(text: str, offsets: np.ndarray) -> np.ndarray:
    """[n] bool per token span (offsets [n, 2] into `text`): True for a whole-word stop word or a token
    with no letter or digit; never for a piece of a longer word."""
    return np.fromiter((_is_function(text, s, e) for s, e in offsets.tolist()), dtype=bool, count=len(offsets))


CONTENT, FUNCTION, PIECE = 0, 1, 2  # token kinds (token_kinds)


def token_kinds(text: str, offsets: np.ndarray) -> np.ndarray:
    """[n] int8 per token span: FUNCTION (as function_tokens), PIECE (part of a longer word: a letter or
    digit of the same word touches it), else CONTENT."""
    return np.fromiter((FUNCTION if _is_function(text, s, e) else PIECE if _is_piece(text, s, e) else CONTENT
                        for s, e in offsets.tolist()), dtype=np.int8, count=len(offsets))


def _is_piece(text: str, start: int, end: int) -> bool:
    core, lo, hi = _core(text, start, end)
    return bool(core) and ((core[0].isalnum() and _touches(text, lo, hi, before=True))
                           or (core[-1].isalnum() and _touches(text, lo, hi, before=False)))


def _is_function(text: str, start: int, end: int) -> bool:
    core, lo, hi = _core(text, start, end)
    if core.lower() not in STOP_WORDS:  # most tokens: a content word, or symbols only
        return not (core.isalnum() or any(ch.isalnum() for ch in core))
    # a stop word (letters only) unless a letter or digit of the same word touches it: "the" of "theory"
    return not (_touches(text, lo, hi, before=True) or _touches(text, lo, hi, before=False))


def _core(text: str, start: int, end: int) -> tuple[str, int, int]:
    """A token's text without surrounding spaces, and where that starts and ends in `text`."""
    piece = text[start:end]
    core = piece.strip()
    lo = start + len(piece) - len(piece.lstrip())
    return core, lo, lo + len(core)


def _touches(text: str, lo: int, hi: int, *, before: bool) -> bool:
    """A letter or digit right before `lo` (before=True) or right at `hi` (else): the same word goes on."""
    return lo > 0 and text[lo - 1].isalnum() if before else hi < len(text) and text[hi].isalnum()


def pooled_masks(texts: list[str], windows, skip: str) -> dict[int, np.ndarray] | None:
    """id(window) -> [T] bool: the content tokens a document's max-pool takes; None when every content
    token is pooled (skip "none"). A document left with no token this way pools all its content tokens."""
    if skip == "none":
        return None
    out = {id(w): w.content & ~function_tokens(texts[w.doc], w.offsets) for w in windows}
    kept = {w.doc for w in windows if out[id(w)].any()}
    for w in windows:
        if w.doc not in kept:
            out[id(w)] = w.content.copy()
    return out


def check_skip(value: str) -> str:
    """The value when it is one of SKIP_CHOICES, else an InputError."""
    if value not in SKIP_CHOICES:
        raise InputError(f"--skip-tokens must be {' or '.join(SKIP_CHOICES)}, not {value!r}")
    return value


def resolve_skip(asked: str | None, sae_cfg, warnings: list[str]) -> tuple[str, str]:
    """(skip choice, where it came from: "option", "sae" or "default"). An explicit choice wins, then the
    SAE's recommendation (its config's saeembed_pooling.skip_tokens), then "none"."""
    if asked is not None:
        return check_skip(asked), "option"
    rec = recommended_skip(sae_cfg)
    if rec is None:
        return "none", "default"
    if rec not in SKIP_CHOICES:
        warnings.append(f"the SAE recommends skip_tokens {rec!r}, which saeembed does not know; pooling every token")
        return "none", "default"
    return rec, "sae"


def recommended_skip(sae_cfg) -> str | None:
    """What the SAE's config recommends for skip_tokens, or None. Read from the saeembed config's extra, or
    from a top-level key of a foreign cfg.json (kept as extra["raw_cfg"])."""
    extra = sae_cfg.extra or {}
    for where in (extra, extra.get("raw_cfg") or {}):
        rec = where.get(RECOMMENDATION_KEY) if isinstance(where, dict) else None
        if isinstance(rec, dict) and rec.get("skip_tokens") is not None:
            return str(rec["skip_tokens"])
    return None
