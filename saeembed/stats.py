"""Shared statistics: Benjamini–Hochberg, two-proportion and McNemar tests, Cochran–Mantel–Haenszel,
Mann–Whitney, and the rule that calls a feature generic.

Each test returns exactly what scipy.stats would, mostly without importing it (the import costs about
half a second); scipy.stats is loaded only for the exact tests of small samples.
"""

from __future__ import annotations

import numpy as np
from scipy import special


def _stats():
    """scipy.stats, imported only where needed (Fisher's exact test, McNemar's exact binomial, the
    exact Mann–Whitney test of tiny samples)."""
    from scipy import stats

    return stats


def chi2_sf_1(x: np.ndarray) -> np.ndarray:
    """scipy.stats.chi2.sf(x, 1) for x >= 0 (the same function: chdtrc)."""
    return special.chdtrc(1, np.asarray(x, dtype=np.float64))


def bh(ps: np.ndarray) -> np.ndarray:
    """scipy.stats.false_discovery_control(ps) (Benjamini–Hochberg), the same steps in the same order
    so the q-values are identical, without importing scipy.stats."""
    ps = np.asarray(ps, dtype=np.float64).ravel()
    if not np.all(ps == np.clip(ps, 0.0, 1.0)):
        raise ValueError("`ps` must include only numbers between 0 and 1.")
    if ps.size <= 1:
        return ps
    m = ps.shape[-1]
    order = np.argsort(ps)
    q = ps[order]
    q *= m / np.arange(1, m + 1, dtype=np.float64)
    np.minimum.accumulate(q[::-1], out=q[::-1])
    out = np.empty_like(q)
    out[order] = q
    return np.clip(out, 0.0, 1.0)


def mann_whitney_p(x: np.ndarray, y: np.ndarray) -> float:
    """Two-sided p of scipy.stats.mannwhitneyu(x, y) for integer samples (token lengths): the
    asymptotic test with tie correction and continuity correction, from value counts instead of a
    sort, with the same float operations (rank sums of integer data are exact in float64 below
    2**52, so they do not depend on summation order). scipy itself where it would use the exact
    distribution (a sample of at most 8 with no ties) or the sums could round."""
    x, y = np.asarray(x), np.asarray(y)
    n1, n2 = len(x), len(y)
    n = n1 + n2
    both = np.concatenate([x, y])
    if not np.issubdtype(both.dtype, np.integer) or float(n1) * n > 2.0**52:
        return float(_stats().mannwhitneyu(x, y).pvalue)
    lo, hi = int(both.min()), int(both.max())
    if hi - lo <= 4 * n + 1024:
        cx = np.bincount(x - lo, minlength=hi - lo + 1)
        counts = np.bincount(both - lo, minlength=hi - lo + 1)
        keep = counts > 0
        cx, counts = cx[keep], counts[keep]
    else:
        _, inverse, counts = np.unique(both, return_inverse=True, return_counts=True)
        cx = np.bincount(inverse[:n1], minlength=len(counts))
    if not (n1 > 8 and n2 > 8) and not (counts > 1).any():
        return float(_stats().mannwhitneyu(x, y).pvalue)
    first = np.cumsum(counts) - counts + 1  # 1-based ordinal rank of each value's first occurrence
    ranks = first.astype(np.float64) + (counts.astype(np.float64) - 1) / 2  # average ranks
    R1 = np.float64((cx * ranks).sum())
    U1 = R1 - n1 * (n1 + 1) / 2
    U2 = n1 * n2 - U1
    U = np.maximum(U1, U2)
    t = np.zeros(n, dtype=np.float64)  # scipy's tie array: each value's count at its first sorted position
    t[first - 1] = counts
    tie_term = np.sum(t**3 - t, axis=-1)
    s = np.sqrt(n1 * n2 / 12 * ((n + 1) - tie_term / (n * (n - 1))))
    numerator = U - n1 * n2 / 2
    numerator -= 0.5
    with np.errstate(divide="ignore", invalid="ignore"):
        z = numerator / s
    p = special.ndtr(-z)
    p *= 2
    return float(np.clip(p, 0.0, 1.0))


def two_proportion_p(ca: np.ndarray, na: int, cb: np.ndarray, nb: int) -> np.ndarray:
    """Two-sided p: pooled two-proportion z-test; Fisher's exact test where an expected cell is < 5."""
    pooled = (ca + cb) / (na + nb)
    se = np.sqrt(pooled * (1 - pooled) * (1 / na + 1 / nb))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, (ca / na - cb / nb) / se, 0.0)
    p = 2 * special.ndtr(-np.abs(z))  # = scipy.stats.norm.sf(|z|)
    m = ca + cb
    expected_min = np.minimum.reduce([m * na, m * nb, (na + nb - m) * na, (na + nb - m) * nb]) / (na + nb)
    small = np.flatnonzero(expected_min < 5)
    if len(small):
        p[small] = fisher_p(np.asarray(ca)[small], na, np.asarray(cb)[small], nb)
    return np.clip(p, 0.0, 1.0)


def fisher_p(ca: np.ndarray, na: int, cb: np.ndarray, nb: int, *, cells: int = 4_000_000) -> np.ndarray:
    """scipy.stats.fisher_exact([[ca, na - ca], [cb, nb - cb]]).pvalue (two-sided) for many tables at
    once: the hypergeometric probabilities of every table with the same margins no more likely than the
    observed one (scipy's relative tolerance 1e-7), summed; tables of similar support share one block of
    at most `cells` probabilities (one scipy call per table took about a millisecond)."""
    ca, cb = np.asarray(ca, dtype=np.int64), np.asarray(cb, dtype=np.int64)
    m, n = ca + cb, na + nb
    lo, hi = np.maximum(0, m - nb), np.minimum(m, na)
    out = np.ones(len(ca))

    def log_pmf(k, mm):
        return (special.gammaln(na + 1) - special.gammaln(k + 1) - special.gammaln(na - k + 1)
                + special.gammaln(nb + 1) - special.gammaln(mm - k + 1) - special.gammaln(nb - mm + k + 1)
                - special.gammaln(n + 1) + special.gammaln(mm + 1) + special.gammaln(n - mm + 1))

    width = hi - lo + 1
    order = np.argsort(width, kind="stable")
    start = 0
    while start < len(order):
        stop = start + 1  # widths rise along `order`: grow the block while it fits
        while stop < len(order) and (stop - start + 1) * width[order[stop]] <= cells:
            stop += 1
        idx = order[start:stop]
        k = lo[idx, None] + np.arange(int(width[idx].max()))[None, :]
        valid = k <= hi[idx, None]
        kk = np.where(valid, k, lo[idx, None])
        prob = np.where(valid, np.exp(log_pmf(kk, m[idx, None])), 0.0)
        observed = np.exp(log_pmf(ca[idx], m[idx]))[:, None]
        out[idx] = np.minimum(1.0, np.where(prob <= observed * (1 + 1e-7), prob, 0.0).sum(axis=1))
        start = stop
    return out


def cmh(ca_s: np.ndarray, cb_s: np.ndarray, na_s: np.ndarray, nb_s: np.ndarray):
    """Cochran–Mantel–Haenszel over strata (rows of ca_s/cb_s), no continuity correction.
    Returns (stratum-weighted difference in proportions, p-value)."""
    na_s = na_s[:, None].astype(np.float64)
    nb_s = nb_s[:, None].astype(np.float64)
    both = (na_s > 0) & (nb_s > 0)
    N = na_s + nb_s
    m1 = ca_s + cb_s
    with np.errstate(divide="ignore", invalid="ignore"):
        E = np.where(both, na_s * m1 / N, 0.0)
        V = np.where(both & (N > 1), na_s * nb_s * m1 * (N - m1) / (N * N * (N - 1)), 0.0)
        w = np.where(both, na_s * nb_s / N, 0.0)
        d = np.where(both, ca_s / na_s - cb_s / nb_s, 0.0)
    num = np.where(both, ca_s - E, 0.0).sum(0)
    var = V.sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        chi2 = np.where(var > 0, num * num / var, 0.0)
        diff_adj = np.where(w.sum(0) > 0, (w * d).sum(0) / w.sum(0), 0.0)
    return diff_adj, chi2_sf_1(chi2)


def mcnemar_p(only_a: np.ndarray, only_b: np.ndarray) -> np.ndarray:
    """McNemar's test from the discordant pair counts: exact binomial when fewer than 25 discordant
    pairs, else chi-square with continuity correction; 1 where there are none."""
    m = only_a + only_b
    with np.errstate(divide="ignore", invalid="ignore"):
        chi2 = np.where(m > 0, (np.abs(only_a - only_b) - 1) ** 2 / m, 0.0)
    p = chi2_sf_1(chi2)
    for i in np.flatnonzero((m > 0) & (m < 25)):
        p[i] = _stats().binomtest(int(only_a[i]), int(m[i]), 0.5).pvalue
    p[m == 0] = 1.0
    return np.clip(p, 0.0, 1.0)


def generic_rule(freq: np.ndarray, random_share: np.ndarray | None, generic_freq: float,
                 random_freq: float) -> tuple[np.ndarray, np.ndarray]:
    """Which features are generic, and why: a feature that fires on at least `generic_freq` of the
    documents, or on at least `random_freq` of random-token texts (`random_share`, aligned with `freq`;
    None when the SAE's random probe is not available), responds to anything, not to content.
    Returns (boolean mask, reason per feature: '' where not generic)."""
    generic = np.asarray(freq) >= generic_freq
    reasons = np.full(len(generic), "", dtype=object)
    reasons[generic] = f"fires on ≥{generic_freq:.0%} of documents"
    if random_share is not None:
        noisy = np.asarray(random_share) >= random_freq
        reasons[noisy & ~generic] = f"fires on ≥{random_freq:.0%} of random-token texts"
        generic = generic | noisy
    return generic, reasons
