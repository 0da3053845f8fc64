"""Near-duplicates by Jaccard of active features: exact and MinHash paths find planted pairs."""

import numpy as np
import pytest
import scipy.sparse as sp

from saeembed.analysis.dedupe import band_shape, greedy_dedupe, minhash, near_duplicate_pairs


def planted(n=600, d=512, k=40, seed=0):
    rng = np.random.default_rng(seed)
    rows = [set(rng.choice(d, k, replace=False).tolist()) for _ in range(n)]
    truth = {}
    for dup, orig in [(50, 3), (120, 7), (400, 399), (599, 10)]:
        s = set(rows[orig])
        drop = list(s)[:2]  # Jaccard(orig, dup) = 38/42 ≈ 0.905 after swapping 2 of 40
        s -= set(drop)
        s |= set(rng.choice([f for f in range(d) if f not in rows[orig]], 2, replace=False).tolist())
        rows[dup] = s
        truth[dup] = orig
    rows[200] = set(rows[100])  # an exact copy
    truth[200] = 100
    indptr = np.cumsum([0] + [len(r) for r in rows])
    X = sp.csr_matrix((rng.uniform(0.1, 2, indptr[-1]), np.concatenate([sorted(r) for r in rows]), indptr), shape=(n, d))
    return X, truth


@pytest.mark.parametrize("method", ["exact", "minhash"])
def test_finds_planted_pairs(method):
    X, truth = planted()
    i, j, jac = near_duplicate_pairs(X, 0.85, method=method)
    found = {int(b): int(a) for a, b in zip(i, j)}
    assert found == truth
    assert np.all(jac >= 0.85) and jac.max() == 1.0
    dup_of, _ = greedy_dedupe(X.shape[0], i, j, jac)
    assert {int(k): int(v) for k, v in enumerate(dup_of) if v >= 0} == truth


def test_minhash_matches_exact_jaccard_estimate():
    X, _ = planted()
    sig = minhash(sp.csr_matrix(X > 0, dtype=np.float32), num_perm=256)
    est = (sig[3] == sig[50]).mean()
    assert 0.8 < est <= 1.0 and (sig[1] == sig[2]).mean() < 0.2


def test_greedy_chain_keeps_first_and_respects_eligibility():
    # 0~1, 1~2 (not 0~2): 1 is dropped as dup of 0, then 2 is kept (its only neighbour 1 is dropped)
    i, j, jac = np.array([0, 1]), np.array([1, 2]), np.array([0.95, 0.95])
    dup_of, _ = greedy_dedupe(3, i, j, jac)
    assert dup_of.tolist() == [-1, 0, -1]
    # when row 0 is already dropped by another rule, 1 is the first eligible copy and stays
    dup_of, _ = greedy_dedupe(3, i, j, jac, eligible=np.array([False, True, True]))
    assert dup_of.tolist() == [-1, -1, 1]


def test_band_shape_recall():
    b, r = band_shape(0.9, 128)
    assert b * r <= 128 and 1 - (1 - 0.9**r) ** b >= 0.99


@pytest.mark.parametrize("method", ["exact", "minhash"])
def test_empty_rows_are_not_duplicates(method):
    X = sp.csr_matrix(np.array([[0, 0, 0], [0, 0, 0], [1, 1, 0], [1, 1, 0]], dtype=np.float32))
    i, j, jac = near_duplicate_pairs(X, 0.9, method=method)
    assert list(zip(i.tolist(), j.tolist())) == [(2, 3)] and jac.tolist() == [1.0]
