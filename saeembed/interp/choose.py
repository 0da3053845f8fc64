"""Choosing a feature's phrase among a few variants by what tells its windows apart.

The offline phrase (saeembed.interp.offline) has choices: how many of the activating words to list,
whether to add context words and which. Each variant is tried on the explain set: how well it separates
the feature's activating windows from the non-activating ones of similar documents (the ones firing the
same other features) and of random ones, with the same embedding the score uses. The variant that
separates best is kept; the held-out score set is never looked at, so the reported score stays honest.
Context candidates are the words of the narrow windows (where the scorer looks) that the activating
windows carry more often than the non-activating ones.
"""

from __future__ import annotations

import re
from collections import Counter

from saeembed.encode.token_kinds import STOP_WORDS
from saeembed.interp.examples import Example
from saeembed.interp.offline import OfflineLabel
from saeembed.interp.phrases import compose, piece_of

_WORD = re.compile(r"[^\W_]+", re.U)
_WORDISH = ("word", "words", "family", "subword")  # kinds a plain list of words can replace
NARROW = 12  # characters each side: the windows the embedding score reads
_PLACEHOLDERS = {"unk"}  # "<unk>" stands for any rare word (WikiText)


def contrast_words(positives: list[Example], negatives: list[Example], *, exclude: set[str], n: int = 2,
                   min_gap: float = 0.1) -> list[str]:
    """Words of the narrow activating windows, by their share there minus their share in the narrow
    non-activating windows (≥ min_gap)."""
    def words(e: Example) -> set[str]:  # whole words only: the narrow cut can split one
        return {w.lower() for w in _WORD.findall(e.around(NARROW)) if len(w) > 1} & {
            w.lower() for w in _WORD.findall(e.text)}

    pos, neg = Counter(), Counter()
    for e in positives:
        pos.update(words(e) - STOP_WORDS - _PLACEHOLDERS)
    for e in negatives:
        neg.update(words(e))
    n_pos, n_neg = max(len(positives), 1), max(len(negatives), 1)
    gaps = sorted(((pos[w] / n_pos - neg[w] / n_neg, w) for w in pos if w not in exclude), key=lambda x: (-x[0], x[1]))
    return [w for g, w in gaps[:n] if g >= min_gap]


def variants(lab: OfflineLabel, positives: list[Example], negatives: list[Example]) -> list[tuple[str, str]]:
    """(label, scorer text) variants of an offline label, the label itself first."""
    if not lab.what:
        return [(lab.label, lab.text)]
    corpus = _where(lab)
    out = [(lab.label, lab.text), (compose(lab.what, [], corpus), compose(lab.what, [], None))]
    # the activating words seen at least twice, commonest first, each in its commonest spelling
    forms = Counter(piece_of(e.text, e.tok or e.hl) for e in positives if e.tok or e.hl)
    pieces, spelling = Counter(), {}
    for form, c in forms.most_common():
        pieces[form.lower()] += c
        spelling.setdefault(form.lower(), form)
    ranked = [spelling[p] for i, (p, c) in enumerate(pieces.most_common(4)) if p.strip() and (i == 0 or c >= 2)]
    if lab.kind in _WORDISH:
        for k in range(1, len(ranked) + 1):
            what = ", ".join(f'"{p}"' for p in ranked[:k])
            out.append((compose(what, [], corpus), compose(what, [], None)))
    said = {w.lower() for p in ranked[:2] for w in _WORD.findall(p)} | {w.lower() for w in _WORD.findall(lab.what)}
    near = contrast_words(positives, negatives, exclude=said)
    for k in range(1, len(near) + 1 if lab.kind != "topic" else 1):  # a topic phrase has its context
        out.append((compose(lab.what, near[:k], corpus), compose(lab.what, near[:k], None)))
    seen, uniq = set(), []
    for label, text in out:
        text = text.replace('"', "")
        if text not in seen:
            seen.add(text)
            uniq.append((label, text))
    return uniq


def _where(lab: OfflineLabel) -> str | None:
    """The "(mostly CORPUS)" part of a label, without its parentheses, or None."""
    if lab.label.endswith(")") and " (mostly " in lab.label:
        return lab.label.rsplit(" (", 1)[1][:-1]
    return None


def choose(lab: OfflineLabel, positives: list[Example], similar: list[Example], random: list[Example],
           score) -> OfflineLabel:
    """The variant of `lab` that best separates `positives` from `similar` and `random` windows (the mean
    of the two AUROCs by score(text, positives, negatives)); the label itself wins ties."""
    negatives = similar + random
    options = variants(lab, positives, negatives)
    if len(options) == 1 or not positives or not negatives:
        return lab

    def fit(text: str) -> float:
        vals = [score(text, positives, neg) for neg in (similar, random) if neg]
        vals = [v for v in vals if v is not None]
        return sum(vals) / len(vals) if vals else 0.0

    best, best_fit = options[0], fit(options[0][1])
    for label, text in options[1:]:
        f = fit(text)
        if f > best_fit + 1e-9:
            best, best_fit = (label, text), f
    if best[0] == lab.label:
        return lab
    return OfflineLabel(best[0], lab.terms, lab.term_scores, lab.metadata, best[1], lab.kind, lab.what)
