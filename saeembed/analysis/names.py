"""How a feature is named in every output: `#2530 · currency amounts`, its label shortened where space is
short, and names for groups of features (a cluster's name from its most distinctive features' labels)."""

from __future__ import annotations

import re

import polars as pl

# Atlas labels end with a note on how the label was found ("(strongest; fires on 76% of texts)"): useful in
# a table's label column, noise in a name.
_NOTE = re.compile(r"\s*\((?:strongest|weak)[^()]*\)\s*$")


def short_label(label, width: int | None = None) -> str:
    """A label as a name: one line, without the atlas's trailing note, cut to `width` characters with '…'."""
    if not isinstance(label, str):
        return ""
    text = _NOTE.sub("", " ".join(label.split())).strip()
    if width is not None and len(text) > width:
        text = text[: max(width - 1, 1)].rstrip() + "…"
    return text


def feature_name(feature, label=None, width: int | None = None, *, short: bool = False) -> str:
    """`#123 · mentions a refund`, or `#123` when unlabelled; the label as short_label gives it when `short`
    or a `width` is given, else in full (on one line)."""
    if short or width is not None:
        text = short_label(label, width)
    else:
        text = " ".join(label.split()) if isinstance(label, str) else ""
    return f"#{feature} · {text}" if text else f"#{feature}"


def named_columns(frame: pl.DataFrame, pairs=(("feature", "label"),), *, width: int | None = None) -> pl.DataFrame:
    """For a table a person reads: each (id column, label column) pair becomes one column, named as the id
    column, that reads `#id · label` (the label in full, or cut to `width`); the label column goes. Pairs
    whose columns are missing are skipped. JSON and CSV keep the two columns apart."""
    for fid, lab in pairs:
        if fid not in frame.columns or lab not in frame.columns:
            continue
        names = [None if f is None else feature_name(f, l, width)
                 for f, l in zip(frame[fid].to_list(), frame[lab].to_list())]
        frame = frame.with_columns(pl.Series(fid, names, dtype=pl.Utf8)).drop(lab)
    return frame


def group_name(labels: list, *, parts: int = 2, width: int = 40) -> str | None:
    """A name for a group of features from the labels of its most distinctive ones (best first): the first
    `parts` distinct labels, shortened, joined with ' · '; None when none is labelled."""
    seen: list[str] = []
    for lab in labels:
        text = short_label(lab, width)
        if text and text.lower() not in (s.lower() for s in seen):
            seen.append(text)
        if len(seen) == parts:
            break
    return " · ".join(seen) or None
