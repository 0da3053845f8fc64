"""Length control for SAE search scores: a long document must not win by being long.

A document's SAE score sums max-pooled feature values, and both the maxima and the number of features
that fire grow with the number of tokens, so raw scores favour long documents whatever they are about.
The expected score at a given length is learned on the corpus itself, for the query at hand: every
searched document's score (0 where no chosen feature fires) is binned by log token count, the mean (and
spread) per bin is interpolated between bin centres, and each document is ranked by how far its score
sits above what documents of its length get anyway:

- residual (default): score - strength * expected(length); strength 1 removes the whole length trend,
  0 is off. The default 0.5 was best of 0, 0.5 and 1 on all three benchmark sets
  (benchmarks/results/search_real.md): part of what long documents score is real content.
- zscore: (score - expected(length)) / spread(length), which also evens out the wider spread of long
  documents (stronger correction; favours short documents more; worse on every benchmark set)
- off: the raw score

Where every document has the same length there is nothing to control and the raw score is kept.
"""

from __future__ import annotations

import numpy as np

from saeembed.errors import InputError

LENGTH_CONTROLS = ("residual", "zscore", "off")
LENGTH_BINS = 20  # at most; fewer when the corpus is small (at least MIN_BIN_DOCS per bin)
MIN_BIN_DOCS = 30
LENGTH_STRENGTH = 0.5  # share of the expected score at a length that residual subtracts


def check_length_control(method: str) -> str:
    if method not in LENGTH_CONTROLS:
        raise InputError(f"unknown length control {method!r}; use one of {', '.join(LENGTH_CONTROLS)}")
    return method


def expected_by_length(lengths: np.ndarray, scores: np.ndarray, *, bins: int = LENGTH_BINS):
    """(mean, spread) of `scores` expected at each entry of `lengths`, or None when all lengths are equal.

    Bins are quantiles of log(1 + length), one per distinct length when there are few; between bin
    centres the mean and spread are interpolated linearly, and continued linearly beyond the outer ones."""
    x = np.log1p(np.asarray(lengths, np.float64))
    s = np.asarray(scores, np.float64)
    n_bins = int(min(bins, max(len(x) // MIN_BIN_DOCS, 2)))
    values = np.unique(x)
    if len(values) < 2:
        return None
    if len(values) <= n_bins:  # few distinct lengths: one bin each
        which = np.searchsorted(values, x)
    else:
        edges = np.unique(np.quantile(x, np.linspace(0, 1, n_bins + 1)))
        which = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)
    count = np.bincount(which)
    used = count > 0
    centre = np.bincount(which, weights=x, minlength=len(count))[used] / count[used]
    mean = np.bincount(which, weights=s, minlength=len(count))[used] / count[used]
    sq = np.bincount(which, weights=s * s, minlength=len(count))[used] / count[used]
    spread = np.sqrt(np.maximum(sq - mean * mean, 0.0))
    if len(centre) < 2:
        return None
    floor = max(0.1 * float(s.std()), 1e-9)  # a bin where nothing fires must not divide by ~0
    return _line(x, centre, mean), np.maximum(_line(x, centre, spread), floor)


def _line(x: np.ndarray, xp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """Piecewise-linear through (xp, fp), continued beyond the ends along the outer segments (the outer
    bins are wide and skewed; holding their mean flat would leave a length trend at both ends)."""
    out = np.interp(x, xp, fp)
    lo, hi = x < xp[0], x > xp[-1]
    out[lo] = fp[0] + (x[lo] - xp[0]) * (fp[1] - fp[0]) / (xp[1] - xp[0])
    out[hi] = fp[-1] + (x[hi] - xp[-1]) * (fp[-1] - fp[-2]) / (xp[-1] - xp[-2])
    return out


def length_adjusted(doc: np.ndarray, score: np.ndarray, pool_doc: np.ndarray, pool_len: np.ndarray,
                    method: str = "residual", strength: float = LENGTH_STRENGTH) -> np.ndarray:
    """Scores of `doc` (raw `score`) with the length effect removed (see module doc). pool_doc/pool_len:
    every searched document and its token count (doc must be among them); documents absent from `doc`
    score 0 in the fit."""
    if method == "off" or len(doc) == 0:
        return np.asarray(score, np.float64)
    order = np.argsort(pool_doc)
    pool_doc, pool_len = pool_doc[order], np.asarray(pool_len, np.float64)[order]
    full = np.zeros(len(pool_doc))
    pos = np.searchsorted(pool_doc, doc)
    inside = (pos < len(pool_doc)) & (pool_doc[np.minimum(pos, len(pool_doc) - 1)] == doc)
    full[pos[inside]] = score[inside]
    fit = expected_by_length(pool_len, full)
    if fit is None:
        return np.asarray(score, np.float64)
    mean, spread = fit
    out = np.asarray(score, np.float64).copy()
    if method == "zscore":
        out[inside] = (full[pos[inside]] - mean[pos[inside]]) / spread[pos[inside]]
    else:
        out[inside] = full[pos[inside]] - strength * mean[pos[inside]]
    return out
