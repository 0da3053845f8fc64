"""Near-duplicate documents by the Jaccard similarity of their active SAE features.

Small sets are compared exactly (blocks of sparse products). Large ones go through MinHash +
LSH banding to find candidate pairs, which are then verified exactly, so every reported pair really
has Jaccard >= threshold; a true pair is missed only with the (small) probability that it shares no
band, which the band shape keeps under 1 % at the threshold itself. Memory stays O(nnz + n * perms).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

EXACT_MAX_DOCS = 4000
_MAX_BUCKET = 200  # in a bigger LSH bucket (many identical bands) link each member to the first only


def _binary(X: sp.csr_matrix) -> sp.csr_matrix:
    X = sp.csr_matrix(X, copy=True)
    X.eliminate_zeros()
    X.data = np.ones_like(X.data, dtype=np.float32)
    X.sort_indices()
    return X


def jaccard_pairs(X: sp.csr_matrix, i: np.ndarray, j: np.ndarray, *, chunk: int = 200_000) -> np.ndarray:
    """Exact Jaccard of rows i[k] and j[k] of a binary CSR."""
    sizes = np.diff(X.indptr).astype(np.float64)
    out = np.empty(len(i), dtype=np.float64)
    for s in range(0, len(i), chunk):
        a, b = i[s : s + chunk], j[s : s + chunk]
        inter = np.asarray(X[a].multiply(X[b]).sum(axis=1)).ravel()
        union = sizes[a] + sizes[b] - inter
        out[s : s + chunk] = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    return out


def _exact_candidates(X: sp.csr_matrix, threshold: float, block: int = 500):
    sizes = np.diff(X.indptr).astype(np.float64)
    XT = X.T.tocsc()
    out_i, out_j = [], []
    for s in range(0, X.shape[0], block):
        inter = (X[s : s + block] @ XT).toarray()  # [block, n], small by construction
        union = sizes[s : s + block, None] + sizes[None, :] - inter
        jac = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
        rows, cols = np.nonzero(jac >= threshold)
        rows = rows + s
        keep = rows < cols
        out_i.append(rows[keep])
        out_j.append(cols[keep])
    return np.concatenate(out_i), np.concatenate(out_j)


def band_shape(threshold: float, num_perm: int, recall: float = 0.99) -> tuple[int, int]:
    """(bands, rows per band): the most selective shape that still makes a pair at exactly
    `threshold` a candidate with probability >= recall."""
    best = (num_perm, 1)
    for r in range(1, num_perm + 1):
        b = num_perm // r
        if b < 1:
            break
        if 1 - (1 - threshold**r) ** b >= recall:
            best = (b, r)
    return best


def minhash(X: sp.csr_matrix, num_perm: int = 128, seed: int = 0, budget: int = 8_000_000) -> np.ndarray:
    """[n, num_perm] MinHash signatures of the rows' active-feature sets (random permutations of the
    feature ids); empty rows get distinct sentinels so they never collide.

    Rows are processed in groups of similar length, padded to a block [rows, max_len, perm] of at most
    about `budget` cells and reduced with min (much faster than ufunc.reduceat on ragged rows)."""
    n, d = X.shape
    rng = np.random.default_rng(seed)
    dtype = np.uint16 if d < 65535 else np.uint32
    ranks = np.stack([rng.permutation(d).astype(dtype) for _ in range(num_perm)]).T  # [feature, perm]
    ranks = np.ascontiguousarray(np.vstack([ranks, np.full((1, num_perm), np.iinfo(dtype).max, dtype)]))
    sig = np.empty((n, num_perm), dtype=np.uint32)
    lens = np.diff(X.indptr)
    order = np.argsort(lens, kind="stable")
    pos = 0
    while pos < n:
        g = max(1, budget // (max(int(lens[order[pos]]), 1) * num_perm))
        g = min(g, n - pos)
        while g > 1 and int(lens[order[pos + g - 1]]) * g * num_perm > 2 * budget:
            g //= 2
        rows = order[pos : pos + g]
        rl = lens[rows]
        width = max(int(rl.max()), 1)
        idx = np.full((g, width), d, dtype=np.int64)  # d -> the padding row of `ranks`
        filled = np.arange(width)[None, :] < rl[:, None]
        starts = X.indptr[rows]
        flat = np.repeat(starts - np.concatenate([[0], np.cumsum(rl)[:-1]]), rl) + np.arange(int(rl.sum()))
        idx[filled] = X.indices[flat]
        sig[rows] = ranks[idx].min(axis=1)
        pos += g
    empty = np.flatnonzero(lens == 0)
    if len(empty):
        sig[empty] = rng.integers(0, 2**32 - 1, size=(len(empty), num_perm), dtype=np.uint32)  # collide with nothing
    return sig


def _lsh_candidates(sig: np.ndarray, bands: int, rows: int, seed: int = 0):
    n = sig.shape[0]
    rng = np.random.default_rng(seed + 1)
    mult = rng.integers(1, 2**63 - 1, size=rows, dtype=np.uint64) | np.uint64(1)
    pairs = []
    with np.errstate(over="ignore"):
        for b in range(bands):
            band = sig[:, b * rows : (b + 1) * rows].astype(np.uint64)
            keys = (band * mult[None, :]).sum(axis=1)  # wraps mod 2^64: a hash of the band
            order = np.argsort(keys, kind="stable")
            sk = keys[order]
            cuts = np.flatnonzero(np.diff(sk)) + 1
            starts = np.concatenate([[0], cuts])
            ends = np.concatenate([cuts, [n]])
            for s, e in zip(starts[(ends - starts) > 1], ends[(ends - starts) > 1]):
                members = np.sort(order[s:e])
                if len(members) <= _MAX_BUCKET:
                    a, c = np.triu_indices(len(members), 1)
                    pairs.append(np.stack([members[a], members[c]], axis=1))
                else:
                    pairs.append(np.stack([np.full(len(members) - 1, members[0]), members[1:]], axis=1))
    if not pairs:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    allp = np.unique(np.concatenate(pairs).astype(np.int64), axis=0)
    return allp[:, 0], allp[:, 1]


def near_duplicate_pairs(
    X: sp.csr_matrix, threshold: float, *, method: str = "auto", num_perm: int = 128, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, jaccard) for every found pair i < j with Jaccard(active features) >= threshold."""
    if not 0 < threshold <= 1:
        raise ValueError("threshold must be in (0, 1]")
    X = _binary(X)
    if method == "auto":
        method = "exact" if X.shape[0] <= EXACT_MAX_DOCS else "minhash"
    if method == "exact":
        i, j = _exact_candidates(X, threshold)
    else:
        bands, rows = band_shape(threshold, num_perm)
        i, j = _lsh_candidates(minhash(X, num_perm, seed), bands, rows, seed)
    jac = jaccard_pairs(X, i, j)
    keep = jac >= threshold - 1e-12
    nonempty = np.diff(X.indptr) > 0
    keep &= nonempty[i] & nonempty[j]
    return i[keep], j[keep], jac[keep]


def greedy_dedupe(n: int, i: np.ndarray, j: np.ndarray, jac: np.ndarray, eligible: np.ndarray | None = None):
    """Keep the first document of each group of near-duplicates (in row order): a row is dropped when
    an earlier, kept, eligible row is its near-duplicate. Returns (dup_of [n], -1 if kept; jaccard [n])."""
    eligible = np.ones(n, dtype=bool) if eligible is None else eligible
    dup_of = np.full(n, -1, dtype=np.int64)
    best = np.zeros(n, dtype=np.float64)
    ok = eligible[i] & eligible[j]
    i, j, jac = i[ok], j[ok], jac[ok]
    order = np.lexsort((i, -jac, j))  # by later row, then most similar earlier row
    for a, b, s in zip(i[order], j[order], jac[order]):
        if dup_of[b] == -1 and dup_of[a] == -1 and a < b:
            dup_of[b] = a
            best[b] = s
    return dup_of, best
