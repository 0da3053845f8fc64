import datetime as dt

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
from scipy import stats

from saeembed.analysis.correlate import (
    CorrelateConfig, cooccurrence, correlate, correlate_with_column, load_decoder, npmi_from_counts,
)
from saeembed.errors import InputError, SAEError
from tests.synthetic import register_sae, write_corpus


def test_npmi_matches_hand_computation_including_never():
    n = 100
    got = npmi_from_counts(np.array([10, 0, 20, 100]), np.array([20, 30, 20, 100]), np.array([25, 40, 20, 100]), n)
    p_ij, p_i, p_j = 0.10, 0.20, 0.25
    assert got[0] == pytest.approx(np.log(p_ij / (p_i * p_j)) / -np.log(p_ij))
    assert got[1] == -1.0  # never co-occur
    assert got[2] == pytest.approx(1.0)  # always together
    assert got[3] == 1.0  # both everywhere


def test_cooccurrence_counts_blocks_like_dense():
    rng = np.random.default_rng(0)
    dense = (rng.random((57, 9)) < 0.3).astype(np.int64)
    co = cooccurrence(sp.csr_matrix(dense), block_docs=10).toarray()
    assert np.array_equal(co, np.triu(dense.T @ dense, k=1))


def test_planted_cooccurrence_ranks_first_and_unexpected_uses_decoder(store):
    rng = np.random.default_rng(3)
    sae = register_sae(store)
    docs = []
    for _ in range(300):
        feats = {f for f in range(16) if rng.random() < 0.15}
        if rng.random() < 0.3:
            feats |= {2, 9}  # planted pair
        docs.append(sorted(feats))
    write_corpus(store, sae, "C", docs)
    r = correlate(store, "C", config=CorrelateConfig(top=5))
    top = r.pairs.row(0, named=True)
    assert (top["feature_a"], top["feature_b"]) == (2, 9)
    x = np.zeros((300, 16), dtype=bool)
    for i, d in enumerate(docs):
        x[i, d] = True
    c2, c9, c29 = x[:, 2].sum(), x[:, 9].sum(), (x[:, 2] & x[:, 9]).sum()
    assert top["npmi"] == pytest.approx(np.log(c29 * 300 / (c2 * c9)) / -np.log(c29 / 300))
    assert top["docs"] == c29
    # The SAE was registered from memory: no weights to compare decoders -> said, not guessed
    assert "decoder directions unavailable" in r.summary["similarity"]
    assert r.unexpected.is_empty()


def test_unexpected_pairs_with_weights(store, tmp_path):
    from saeembed.sae.formats import save_sae
    from tests.conftest import make_sae

    obj = make_sae(8, 16, seed=0)
    w = obj.W_dec.detach().clone()
    w[5] = w[4] + 0.01 * w[5]  # 4 and 5: nearly the same direction -> expected pair
    w[12] = w[12] - (w[12] @ w[1]) / (w[1] @ w[1]) * w[1]  # 1 and 12: orthogonal -> unexpected pair
    obj.W_dec.data.copy_(w)
    path = tmp_path / "sae"
    save_sae(obj, path)
    sae = store.register_sae(obj)
    rng = np.random.default_rng(4)
    docs = []
    for _ in range(300):
        feats = {f for f in range(16) if rng.random() < 0.1}
        if rng.random() < 0.3:
            feats |= {4, 5}
        if rng.random() < 0.3:
            feats |= {1, 12}
        docs.append(sorted(feats))
    write_corpus(store, sae, "C", docs)
    r = correlate(store, "C", sae_weights=str(path), config=CorrelateConfig(top=10))
    pairs = list(zip(r.unexpected["feature_a"], r.unexpected["feature_b"]))
    assert (1, 12) in pairs and (4, 5) not in pairs
    assert abs(r.pairs.filter((pl.col("feature_a") == 4) & (pl.col("feature_b") == 5))["decoder_cosine"][0]) > 0.9
    with pytest.raises(SAEError, match="neither an existing"):
        load_decoder(store, sae, str(tmp_path / "missing"))
    save_sae(make_sae(8, 16, seed=9), tmp_path / "other")
    with pytest.raises(SAEError, match="holds SAE .*, not"):
        load_decoder(store, sae, str(tmp_path / "other"))


def test_with_categorical_column(store):
    rng = np.random.default_rng(5)
    sae = register_sae(store)
    version = ["v1"] * 100 + ["v2"] * 100
    docs = [sorted({f for f in range(16) if rng.random() < 0.2} | ({6} if v == "v2" and rng.random() < 0.7 else set()))
            for v in version]
    write_corpus(store, sae, "C", docs, meta={"version": version})
    r = correlate_with_column(store, "C", "version")
    v2 = r.frame.filter(pl.col("category") == "v2").row(0, named=True)
    assert v2["feature"] == 6 and v2["q_value"] < 1e-6 and v2["lift"] > 1.3
    in_v2 = sum(6 in d for d, v in zip(docs, version) if v == "v2")
    assert v2["freq_in"] == pytest.approx(in_v2 / 100)


def test_with_numeric_and_date_column_matches_scipy_spearman(store):
    rng = np.random.default_rng(6)
    sae = register_sae(store)
    n = 150
    score = rng.normal(size=n)
    docs = []
    for s in score:
        d = {f: float(rng.random()) for f in range(16) if rng.random() < 0.2}
        if s > 0.3:
            d[8] = float(1 + s)  # rises with the score
        docs.append(d)
    dates = [dt.date(2024, 1, 1) + dt.timedelta(days=int(k)) for k in np.argsort(np.argsort(score))]
    write_corpus(store, sae, "C", docs, meta={"score": score.tolist(), "day": dates})
    r = correlate_with_column(store, "C", "score")
    top = r.frame.row(0, named=True)
    assert top["feature"] == 8 and top["direction"] == "rises"
    act = np.array([d.get(8, 0.0) for d in docs])
    assert top["spearman"] == pytest.approx(stats.spearmanr(act, score).statistic)
    assert r.trend is not None and r.trend.height == 5 and r.trend["f8"][-1] > r.trend["f8"][0]
    by_day = correlate_with_column(store, "C", "day")
    assert by_day.frame["feature"][0] == 8
    with pytest.raises(InputError, match="no column"):
        correlate_with_column(store, "C", "nope")


def test_generic_features_are_left_out_of_pairs_and_text_dates_are_dates(store):
    rng = np.random.default_rng(7)
    sae = register_sae(store)
    days = [f"2024-01-{1 + i % 28:02d}" for i in range(120)]
    docs = []
    for i in range(120):
        feats = {0, 1} | {f for f in range(2, 16) if rng.random() < 0.2}  # 0 and 1 fire everywhere
        if i % 28 >= 14 and rng.random() < 0.8:
            feats.add(11)  # rises in the second half of each month
        docs.append(sorted(feats))
    write_corpus(store, sae, "C", docs, meta={"day": days})
    r = correlate(store, "C", config=CorrelateConfig(top=50))
    assert not ({0, 1} & (set(r.pairs["feature_a"]) | set(r.pairs["feature_b"])))
    assert r.summary["generic_excluded"] == 2
    kept = correlate(store, "C", config=CorrelateConfig(top=50, keep_generic=True))
    assert (0, 1) in set(zip(kept.pairs["feature_a"], kept.pairs["feature_b"]))
    by_day = correlate_with_column(store, "C", "day")
    assert by_day.summary["kind"] == "numeric" and by_day.frame["feature"][0] == 11
