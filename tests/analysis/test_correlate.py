import datetime as dt

import numpy as np
import polars as pl
import pytest
from scipy import stats

from saeembed.analysis.cooccur import pair_counts
from saeembed.analysis.correlate import (
    CorrelateConfig, correlate, correlate_with_column, load_decoder, npmi_from_counts,
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


def test_pair_counts_equal_the_dense_product():
    rng = np.random.default_rng(0)
    dense = (rng.random((57, 12)) < 0.3).astype(np.int64)
    doc, feat = np.nonzero(dense)
    order = rng.permutation(len(doc))  # any order of the sparse entries
    keep = np.array([0, 2, 3, 5, 7, 8, 11])
    acc = pair_counts(doc[order], feat[order], 57, keep)
    sub = dense[:, keep]
    assert np.array_equal(acc, np.triu(sub.T @ sub, k=1))


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


def _weights(tmp_path, edit):
    """An SAE (8 -> 16) whose decoder directions `edit` adjusts in place, saved and returned with its path."""
    from saeembed.sae.formats import save_sae
    from tests.conftest import make_sae

    obj = make_sae(8, 16, seed=0)
    w = obj.W_dec.detach().clone()
    edit(w)
    obj.W_dec.data.copy_(w)
    path = tmp_path / "sae"
    save_sae(obj, path)
    return obj, path


def _orthogonal(w, i, *others):
    for o in others:
        w[i] = w[i] - (w[i] @ w[o]) / (w[o] @ w[o]) * w[o]


def test_unexpected_pairs_with_weights(store, tmp_path):
    from saeembed.sae.formats import save_sae
    from tests.conftest import make_sae

    def edit(w):
        w[5] = w[4] + 0.01 * w[5]  # 4 and 5: nearly the same direction -> expected pair
        w[7] = w[6] + 0.01 * w[7]  # 6 and 7 too
        _orthogonal(w, 12, 1)  # 1 and 12: orthogonal -> unexpected pair

    obj, path = _weights(tmp_path, edit)
    sae = store.register_sae(obj)
    rng = np.random.default_rng(4)
    docs = []
    for _ in range(300):
        feats = {f for f in range(16) if rng.random() < 0.1}
        if rng.random() < 0.4:
            feats |= {4, 5}
        if rng.random() < 0.25:
            feats |= {1, 12}
        if rng.random() < 0.25:
            feats |= {6, 7}
        docs.append(sorted(feats))
    write_corpus(store, sae, "C", docs)
    r = correlate(store, "C", sae_weights=str(path), config=CorrelateConfig(top=1))
    assert list(zip(r.pairs["feature_a"], r.pairs["feature_b"])) == [(4, 5)]
    assert abs(r.pairs["decoder_cosine"][0]) > 0.9
    pairs = list(zip(r.unexpected["feature_a"], r.unexpected["feature_b"]))
    assert (1, 12) in pairs and (6, 7) not in pairs and (4, 5) not in pairs
    # a dissimilar pair strong enough to be among the strongest is shown there (with its cosine), not twice
    r = correlate(store, "C", sae_weights=str(path), config=CorrelateConfig(top=10))
    strongest = set(zip(r.pairs["feature_a"], r.pairs["feature_b"]))
    assert (1, 12) in strongest and not strongest & set(zip(r.unexpected["feature_a"], r.unexpected["feature_b"]))
    assert abs(r.pairs.filter((pl.col("feature_a") == 1) & (pl.col("feature_b") == 12))["decoder_cosine"][0]) < 1e-5
    with pytest.raises(SAEError, match="neither an existing"):
        load_decoder(store, sae, str(tmp_path / "missing"))
    save_sae(make_sae(8, 16, seed=9), tmp_path / "other")
    with pytest.raises(SAEError, match="holds SAE .*, not"):
        load_decoder(store, sae, str(tmp_path / "other"))


def _clique_corpus(store, tmp_path, n=2000):
    """A 5-document and a 12-document clique (features that only ever fire together) beside a real pair
    (2, 9) on ~500 documents, over 4 % background; the 12-clique's decoder directions are orthogonal."""
    def edit(w):
        _orthogonal(w, 11, 10)
        _orthogonal(w, 12, 10, 11)

    obj, path = _weights(tmp_path, edit)
    sae = store.register_sae(obj)
    rng = np.random.default_rng(11)
    docs = []
    for d in range(n):
        feats = {f for f in range(16) if rng.random() < 0.04} - {10, 11, 12, 13, 14}
        if d < 5:
            feats = {13, 14}
        elif d < 17:
            feats = {10, 11, 12}
        elif rng.random() < 0.25:
            feats |= {2, 9}
        elif rng.random() < 0.05:
            feats.add(int(rng.choice([2, 9])))  # each also fires alone
        docs.append(sorted(feats))
    write_corpus(store, sae, "C", docs)
    return docs, path


def test_a_small_clique_does_not_top_a_large_correlated_pair(store, tmp_path):
    """Five near-duplicate documents make features that only ever fire together (NPMI 1.0); a dozen still
    do. Neither may outrank a pair that co-occurs on hundreds of documents, and the unexpected list must
    not repeat the strongest one."""
    n = 2000
    docs, path = _clique_corpus(store, tmp_path, n)
    r = correlate(store, "C", sae_weights=str(path), config=CorrelateConfig(top=3))
    assert r.summary["pair_min_docs"] == 10  # max(10, 0.5 % of 2000)
    listed = pl.concat([r.pairs, r.unexpected], how="diagonal_relaxed")
    got = {(a, b): row for a, b, row in zip(listed["feature_a"], listed["feature_b"], listed.iter_rows(named=True))}
    assert (13, 14) not in got  # 5 documents: not listed at all
    clique = got[(10, 11)]
    assert clique["npmi"] == pytest.approx(1.0) and clique["docs"] == 12
    top = r.pairs.row(0, named=True)
    assert (top["feature_a"], top["feature_b"]) == (2, 9)
    assert top["npmi"] < clique["npmi"]  # raw NPMI alone would have put the clique first
    x = np.zeros((n, 16), dtype=bool)
    for i, d in enumerate(docs):
        x[i, d] = True
    c2, c9, c29 = x[:, 2].sum(), x[:, 9].sum(), (x[:, 2] & x[:, 9]).sum()
    npmi = np.log(c29 * n / (c2 * c9)) / -np.log(c29 / n)
    assert top["npmi"] == pytest.approx(npmi) and top["npmi_shrunk"] == pytest.approx(npmi * c29 / (c29 + 20))
    assert clique["npmi_shrunk"] == pytest.approx(12 / 32)
    strongest = set(zip(r.pairs["feature_a"], r.pairs["feature_b"]))
    unexpected = set(zip(r.unexpected["feature_a"], r.unexpected["feature_b"]))
    assert unexpected and not strongest & unexpected
    assert r.unexpected["decoder_cosine"].abs().max() < 0.2
    # support can be asked for: 13 joint documents leave out the 12-document clique too
    r = correlate(store, "C", sae_weights=str(path), config=CorrelateConfig(min_pair_docs=13))
    assert r.summary["pair_min_docs"] == 13 and r.pairs["docs"].min() >= 13 and r.unexpected.is_empty()


def test_cli_correlate_ranks_by_support_and_keeps_the_lists_apart(capsys, monkeypatch, tmp_path):
    import json

    from saeembed.store import Store
    from tests.test_cli import run

    with Store(tmp_path / "s.duckdb") as st:
        _, path = _clique_corpus(st, tmp_path)
    code, out, err = run(capsys, monkeypatch, "correlate", "C", "-s", tmp_path / "s.duckdb", "--sae-weights", path,
                         "--json", "--top", "3")
    assert code == 0, err
    rows = json.loads(out)
    strongest = [(r["feature_a"], r["feature_b"]) for r in rows if r["list"] == "strongest"]
    unexpected = [(r["feature_a"], r["feature_b"]) for r in rows if r["list"] == "unexpected"]
    assert strongest[0] == (2, 9) and unexpected and not set(strongest) & set(unexpected)
    assert rows[0]["npmi_shrunk"] < rows[0]["npmi"] < 1.0


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


def test_strongest_pairs_scans_blocks_like_a_full_sort():
    from saeembed.analysis.correlate import strongest_pairs

    rng = np.random.default_rng(8)
    k = 40
    acc = np.triu(rng.integers(0, 30, size=(k, k)), k=1).astype(np.int32)
    keep = np.arange(100, 100 + k)
    counts = np.zeros(200, dtype=np.int64)
    counts[keep] = rng.integers(60, 120, size=k)
    i, j, c, v, total = strongest_pairs(acc, keep, counts, 500, 5, 25, rows_per_block=7)
    ai, aj = np.nonzero(acc >= 5)
    full = npmi_from_counts(acc[ai, aj], counts[keep[ai]], counts[keep[aj]], 500)
    assert total == len(ai) and len(v) == 25
    assert np.allclose(np.sort(v)[::-1], np.sort(full)[::-1][:25])
    assert all(acc[a - 100, b - 100] == cc for a, b, cc in zip(i, j, c))
    # ranked by the shrunk NPMI: the same 25 as a full sort on npmi x docs / (docs + 20)
    i, j, c, v, _ = strongest_pairs(acc, keep, counts, 500, 5, 25, rows_per_block=7, shrink_docs=20)
    shrunk = full * acc[ai, aj] / (acc[ai, aj] + 20)
    assert np.allclose(np.sort(v * c / (c + 20))[::-1], np.sort(shrunk)[::-1][:25])
