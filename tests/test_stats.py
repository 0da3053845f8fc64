"""saeembed.stats against scipy on the same tables."""

import numpy as np
import pytest
from scipy import stats as sps

from saeembed.stats import fisher_p, two_proportion_p


@pytest.mark.parametrize("na, nb", [(7, 9), (40, 13), (300, 250)])
def test_fisher_p_matches_scipy_on_every_table(na, nb):
    rng = np.random.default_rng(na * nb)
    ca = rng.integers(0, na + 1, 200)
    cb = rng.integers(0, nb + 1, 200)
    ours = fisher_p(ca, na, cb, nb)
    ref = [sps.fisher_exact([[a, na - a], [b, nb - b]]).pvalue for a, b in zip(ca, cb)]
    np.testing.assert_allclose(ours, ref, rtol=1e-8, atol=1e-12)


def test_fisher_p_in_blocks_matches_one_block():
    ca, cb = np.arange(0, 60), np.arange(59, -1, -1)
    np.testing.assert_array_equal(fisher_p(ca, 60, cb, 70, cells=50), fisher_p(ca, 60, cb, 70))


def test_two_proportion_p_uses_fisher_for_small_counts_and_z_otherwise():
    p = two_proportion_p(np.array([3, 40]), 100, np.array([0, 20]), 50)
    assert p[0] == pytest.approx(sps.fisher_exact([[3, 97], [0, 50]]).pvalue)  # an expected cell < 5
    z = sps.norm.sf(abs((0.4 - 0.4) / 1)) * 2  # 40/100 vs 20/50: equal shares, z = 0
    assert p[1] == pytest.approx(z)
