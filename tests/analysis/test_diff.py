import numpy as np
import polars as pl
import pytest
from scipy import stats

from saeembed.analysis.diff import DiffConfig, diff_by, diff_corpora, diff_slices
from saeembed.stats import cmh as _cmh
from saeembed.errors import FilterError, InputError
from tests.synthetic import register_sae, write_corpus


def _docs(rng, n, probs: dict[int, float], background=0.2, d_sae=16):
    out = []
    for _ in range(n):
        feats = [f for f in range(1, d_sae) if rng.random() < probs.get(f, background)]
        out.append([0] + feats)  # feature 0 fires everywhere: generic
    return out


@pytest.fixture
def planted(store):
    rng = np.random.default_rng(0)
    sae = register_sae(store)
    write_corpus(store, sae, "A", _docs(rng, 200, {3: 0.6, 7: 0.1}))
    write_corpus(store, sae, "B", _docs(rng, 200, {3: 0.2, 7: 0.5}))
    return store, sae


def test_planted_differences_rank_first_with_direction(planted):
    store, _ = planted
    r = diff_corpora(store, "A", "B", config=DiffConfig(top=None))
    assert set(r.frame["feature"][:2].to_list()) == {3, 7}
    rows = {row["feature"]: row for row in r.frame.iter_rows(named=True)}
    assert rows[3]["more_in"] == "A" and rows[7]["more_in"] == "B"
    assert rows[3]["q_value"] < 1e-6 and rows[7]["q_value"] < 1e-6
    assert 0 not in rows  # fires everywhere: generic, left out by default
    assert r.summary["generic_excluded"] == 1 and r.summary["n_a"] == 200 and not r.summary["length_controlled"]
    kept = diff_corpora(store, "A", "B", config=DiffConfig(top=None, keep_generic=True)).frame
    g = kept.filter(pl.col("feature") == 0).row(0, named=True)
    assert g["generic"] and "documents" in g["generic_reason"]


def test_p_values_agree_with_scipy_and_q_values_are_bh(planted):
    store, _ = planted
    f = diff_corpora(store, "A", "B", config=DiffConfig(top=None, keep_generic=True)).frame
    for row in f.iter_rows(named=True):
        table = np.array([[row["docs_a"], 200 - row["docs_a"]], [row["docs_b"], 200 - row["docs_b"]]])
        expected_cells = stats.contingency.expected_freq(table)
        if expected_cells.min() < 5:
            p = stats.fisher_exact(table).pvalue
        else:
            p = stats.chi2_contingency(table, correction=False).pvalue  # = two-proportion z-test
        assert row["p_raw"] == pytest.approx(p, rel=1e-6, abs=1e-12)
        assert row["freq_a"] == pytest.approx(row["docs_a"] / 200)
    assert np.allclose(f["q_value"].to_numpy(), stats.false_discovery_control(f["p_value"].to_numpy()))


def test_fisher_is_used_for_small_counts(store):
    sae = register_sae(store)
    write_corpus(store, sae, "A", [[1, 2]] * 4 + [[2]] * 6)
    write_corpus(store, sae, "B", [[2]] * 10)
    f = diff_corpora(store, "A", "B", config=DiffConfig(top=None, keep_generic=True)).frame
    row = f.filter(pl.col("feature") == 1).row(0, named=True)
    assert row["p_raw"] == pytest.approx(stats.fisher_exact([[4, 6], [0, 10]]).pvalue)


def test_random_probe_flags_generic_features(planted):
    store, sae = planted
    store.set_probe(sae, "random", pl.DataFrame({"feature": [3, 7], "value": [0.95, 0.5]}), 128)
    f = diff_corpora(store, "A", "B", config=DiffConfig(top=None)).frame
    assert 3 not in f["feature"].to_list() and 7 in f["feature"].to_list()  # 7 is below the 0.9 threshold
    f = diff_corpora(store, "A", "B", config=DiffConfig(top=None, keep_generic=True)).frame
    assert "random-token" in f.filter(pl.col("feature") == 3)["generic_reason"][0]


def test_paired_mode_uses_mcnemar_and_differs_from_unpaired(store):
    sae = register_sae(store)
    # 100 prompts; feature 2 fires for prompts 0..59 in A and 0..49 in B: 10 discordant pairs, all one way
    a = [[2, 5] if i < 60 else [5] for i in range(100)]
    b = [[2, 5] if i < 50 else [5] for i in range(100)]
    prompts = [f"p{i}" for i in range(100)]
    write_corpus(store, sae, "A", a, meta={"prompt": prompts})
    write_corpus(store, sae, "B", b[::-1], meta={"prompt": prompts[::-1]})  # stored in another order
    cfg = DiffConfig(top=None, keep_generic=True)
    unpaired = diff_corpora(store, "A", "B", config=cfg).frame.filter(pl.col("feature") == 2).row(0, named=True)
    paired_r = diff_corpora(store, "A", "B", paired_on="prompt", config=cfg)
    paired = paired_r.frame.filter(pl.col("feature") == 2).row(0, named=True)
    assert paired_r.summary["test"] == "mcnemar" and paired_r.summary["pairs"] == 100
    assert paired["p_value"] == pytest.approx(stats.binomtest(10, 10, 0.5).pvalue)
    assert unpaired["p_value"] > 0.1 and paired["p_value"] < 0.01


def test_cmh_matches_a_hand_computation():
    ca = np.array([[3], [10]])
    cb = np.array([[1], [4]])
    na, nb = np.array([10, 20]), np.array([10, 8])
    d, p = _cmh(ca, cb, na, nb)
    num = var = wsum = wd = 0.0
    for s in range(2):
        N, m1 = na[s] + nb[s], ca[s, 0] + cb[s, 0]
        num += ca[s, 0] - na[s] * m1 / N
        var += na[s] * nb[s] * m1 * (N - m1) / (N**2 * (N - 1))
        w = na[s] * nb[s] / N
        wsum += w
        wd += w * (ca[s, 0] / na[s] - cb[s, 0] / nb[s])
    assert d[0] == pytest.approx(wd / wsum)
    assert p[0] == pytest.approx(stats.chi2.sf(num**2 / var, 1))


LEVELS = [20, 40, 80, 160, 320]  # token lengths; features 9, 10, 11 fire more often the longer the document


def _length_planted(store, seed=1):
    """A and B where length drives features 9, 10, 11 (they fire more in longer documents, and A's are
    mostly long) and feature 4 differs by itself (A 0.45, B 0.25 at every length)."""
    rng = np.random.default_rng(seed)
    sae = register_sae(store)
    fire = [0.05, 0.2, 0.4, 0.6, 0.85]

    def side(n, p_level, p4):
        docs, lengths = [], []
        for _ in range(n):
            level = rng.choice(5, p=p_level)
            feats = [f for f in range(1, 16) if f not in (4, 9, 10, 11) and rng.random() < 0.2]
            feats += [f for f in (9, 10, 11) if rng.random() < fire[level]]  # length only
            if rng.random() < p4:
                feats.append(4)  # a real difference
            docs.append(feats)
            lengths.append(LEVELS[level])
        return docs, lengths

    da, la = side(400, [0.05, 0.1, 0.15, 0.3, 0.4], 0.45)
    db, lb = side(400, [0.4, 0.3, 0.15, 0.1, 0.05], 0.25)
    write_corpus(store, sae, "A", da, n_tokens=la, meta={"prompt": [f"p{i}" for i in range(400)]})
    write_corpus(store, sae, "B", db, n_tokens=lb, meta={"prompt": [f"p{i}" for i in range(400)]})
    return sae


def test_raw_ranking_lists_length_driven_features_controlled_ranking_the_independent_one(store):
    _length_planted(store)
    raw = diff_corpora(store, "A", "B", config=DiffConfig(top=None, length_control="off"))
    both = diff_corpora(store, "A", "B", config=DiffConfig(top=None))  # auto -> on: lengths differ
    assert raw.summary["rankings"] == ["raw"] and set(raw.frame["ranking"]) == {"raw"}
    assert both.summary["rankings"] == ["raw", "length_controlled"] and both.summary["length_controlled"]
    assert "as long as" in both.summary["length_note"]
    finding = both.summary["length_finding"]
    assert finding.startswith("A's documents are") and "length alone" in finding
    r = both.frame.filter(pl.col("ranking") == "raw")
    c = both.frame.filter(pl.col("ranking") == "length_controlled")
    assert r["feature"].to_list() == raw.frame["feature"].to_list()  # the raw section is the length-off ranking
    assert set(r["feature"][:3]) == {9, 10, 11} and r["feature"][3] == 4  # what differs: length first
    assert r["q_value"].to_list() == pytest.approx(r["q_raw"].to_list())
    assert c["feature"][0] == 4 and c["q_value"][0] < 1e-4 and c["more_in"][0] == "A"  # beyond length
    for f in (9, 10, 11):
        row = c.filter(pl.col("feature") == f).row(0, named=True)
        assert row["q_value"] > 0.05 and abs(row["diff_adj"]) < 0.1 and row["q_value"] == row["q_adj"]
    # each ranking's own effect decides its order; both carry the same per-feature numbers
    assert np.all(np.diff(np.abs(c["diff_adj"].to_numpy())) <= 1e-12)
    assert np.all(np.diff(np.abs(r["diff"].to_numpy())) <= 1e-12)
    assert both.summary["significant_q05"] == int((r["q_value"] <= 0.05).sum())
    assert both.summary["significant_q05_length_controlled"] == int((c["q_value"] <= 0.05).sum())
    top = DiffConfig(top=2)
    assert diff_corpora(store, "A", "B", config=top).frame["ranking"].to_list() == ["raw"] * 2 + ["length_controlled"] * 2
    # the view's --top counts rows in all: an odd number gives the first section the extra row
    from saeembed.config import DiffView, section_sizes

    assert section_sizes(3, 2) == [2, 1] and section_sizes(20, 2) == [10, 10] and section_sizes(1, 2) == [1, 1]
    shown = DiffView(top=3).apply(both.frame)
    assert shown["ranking"].to_list() == ["raw", "raw", "length_controlled"]
    assert shown["feature"].to_list() == r["feature"][:2].to_list() + c["feature"][:1].to_list()
    assert DiffView(top=5).apply(raw.frame)["feature"].to_list() == raw.frame["feature"][:5].to_list()


def test_sides_with_no_length_in_common_say_length_cannot_be_controlled(store):
    rng = np.random.default_rng(3)
    sae = register_sae(store)
    docs = lambda p4: [[f for f in range(1, 8) if rng.random() < 0.3] + ([4] if rng.random() < p4 else [])  # noqa: E731
                       for _ in range(200)]
    write_corpus(store, sae, "A", docs(0.6), n_tokens=list(rng.integers(300, 400, 200)))
    write_corpus(store, sae, "B", docs(0.1), n_tokens=list(rng.integers(10, 20, 200)))
    r = diff_corpora(store, "A", "B", config=DiffConfig(top=None, length_control="on"))
    assert r.summary["rankings"] == ["raw"] and not r.summary["length_controlled"]
    assert "lengths do not overlap" in r.summary["length_note"]
    assert "cannot be told apart from length" in r.summary["length_finding"]
    assert r.frame["feature"][0] == 4 and set(r.frame["ranking"]) == {"raw"}
    # one shared bin is enough for the controlled ranking
    write_corpus(store, sae, "C", docs(0.1), n_tokens=list(rng.integers(10, 20, 150)) + list(rng.integers(300, 400, 50)))
    mixed = diff_corpora(store, "A", "C", config=DiffConfig(top=None, length_control="on"))
    assert mixed.summary["rankings"] == ["raw", "length_controlled"]


def test_paired_or_comparable_lengths_give_one_ranking(store):
    _length_planted(store)
    paired = diff_corpora(store, "A", "B", paired_on="prompt", config=DiffConfig(top=None))
    assert paired.summary["rankings"] == ["raw"] and paired.summary["test"] == "mcnemar"
    assert paired.summary["separability"]["fold_kind"] == "grouped by prompt"
    assert "length_finding" in paired.summary  # the length difference is still stated


def test_slices_by_groups_and_hostile_filters(store):
    rng = np.random.default_rng(2)
    sae = register_sae(store)
    docs = _docs(rng, 120, {})
    src = ["web"] * 60 + ["x'; DROP TABLE documents; --"] * 60
    for i in range(60, 120):
        docs[i] = docs[i] + [11]
    write_corpus(store, sae, "C", docs, meta={"src": src, "gen": ["m1", "m2", "m3"] * 40})
    r = diff_slices(store, "C", "src = 'x''; DROP TABLE documents; --'")
    assert r.frame["feature"][0] == 11 and r.summary["n_a"] == 60 and r.summary["n_b"] == 60
    assert store.query("SELECT count(*) AS n FROM documents")["n"][0] == 120  # nothing dropped
    r2 = diff_slices(store, "C", "src = 'web'", "gen = 'm1'")
    assert r2.summary["n_b"] == 40
    for bad in ["src = 'a'; DROP TABLE documents", "src = 'a' UNION SELECT 1", "nope = 1"]:
        with pytest.raises(FilterError):
            diff_slices(store, "C", bad)
    groups = diff_by(store, "C", "gen")
    assert set(groups) == {"m1", "m2", "m3"} and groups["m1"].summary["n_a"] == 40
    assert groups["m1"].summary["n_b"] == 80
    with pytest.raises(InputError, match="no column"):
        diff_by(store, "C", "nope")
    with pytest.raises(InputError, match="no encoded documents"):
        diff_slices(store, "C", "src = 'nothing'")


def test_exemplars_come_from_their_own_side(planted):
    store, _ = planted
    f = diff_corpora(store, "A", "B", config=DiffConfig(top=3)).frame
    assert all(s.startswith("«A document") for s in f["exemplar_a"].drop_nulls())
    assert all(s.startswith("«B document") for s in f["exemplar_b"].drop_nulls())


def test_mean_value_where_active_per_side(store):
    sae = register_sae(store)
    write_corpus(store, sae, "A", [{1: 2.0}, {1: 4.0}, {2: 1.0}])
    write_corpus(store, sae, "B", [{1: 1.0}, {2: 3.0}, {2: 5.0}])
    for lc in ("off", "on"):
        f = diff_corpora(store, "A", "B", config=DiffConfig(top=None, keep_generic=True, length_control=lc)).frame
        r1 = f.filter(pl.col("feature") == 1).row(0, named=True)
        r2 = f.filter(pl.col("feature") == 2).row(0, named=True)
        assert (r1["mean_a"], r1["mean_b"], r2["mean_a"], r2["mean_b"]) == (3.0, 1.0, 1.0, 4.0)
        assert (r1["docs_a"], r1["docs_b"]) == (2, 1)


# --- the one-pass counting (codes by doc_idx, numba), checked against counts made here ----------------


def _write_split(store, sae, name, docs, n_tokens, meta):
    """Like write_corpus, but the first half of the documents goes into the store's table and the
    second half into a Parquet shard: the diff reads the `activations` view over both."""
    from saeembed.documents import Documents

    n = len(docs)
    texts = [f"{name} document {i}" for i in range(n)]
    frame = pl.DataFrame({"doc_id": [f"{name}{i}" for i in range(n)], "text": texts, **meta})
    info = store.add_corpus(name, Documents(frame, "text", "id", list(meta), "synthetic", 0))
    store.begin_encoding(info, sae, "synthetic-model", "layers.1", {})
    for lo, hi, shard in ((0, n // 2, False), (n // 2, n, True)):
        rows = [(i, f, v, 1, 0, len(texts[i])) for i in range(lo, hi) for f, v in docs[i].items()]
        acts = pl.DataFrame(rows, orient="row", schema={
            "doc_idx": pl.Int32, "feature": pl.Int32, "value": pl.Float32, "active_tokens": pl.Int32,
            "span_start": pl.Int32, "span_end": pl.Int32})
        stats_ = pl.DataFrame(
            {"doc_idx": list(range(lo, hi)), "n_tokens": n_tokens[lo:hi], "n_windows": [1] * (hi - lo)},
            schema={"doc_idx": pl.Int32, "n_tokens": pl.Int32, "n_windows": pl.Int32})
        store.write_encoded(info, sae, acts, stats_, shard=shard)
    store.finish_encoding(info, sae)
    return store.corpus(name)


def _expected(rows: pl.DataFrame, docs: list[int], k: int) -> dict[int, tuple[int, float, list[int]]]:
    """feature -> (documents where it fires, mean value there, its k strongest doc_idx) over `docs`."""
    part = rows.filter(pl.col("doc_idx").is_in(docs))
    out = {}
    for (f,), g in part.group_by("feature"):
        g = g.sort(["value", "doc_idx"], descending=[True, False])
        out[int(f)] = (g.height, float(g["value"].cast(pl.Float64).mean()), g["doc_idx"].head(k).to_list())
    return out


@pytest.mark.parametrize("length_control", ["off", "on"])
def test_fast_counts_means_and_exemplars_equal_an_independent_count(store, length_control):
    from saeembed.textwindow import snippet

    rng = np.random.default_rng(7)
    sae = register_sae(store, d_sae=24)
    n = 300
    # values from a few levels, so that ties in the exemplar order (value, then doc_idx) are common
    docs = [{int(f): float(rng.choice([0.5, 1.0, 2.0])) for f in rng.choice(24, size=rng.integers(0, 9), replace=False)}
            for _ in range(n)]
    n_tokens = rng.integers(3, 200, n).tolist()
    meta = {"grp": [str(g) for g in rng.choice(["x", "y", "z"], n)]}
    _write_split(store, sae, "S", docs, n_tokens, meta)
    assert store.shards().height == 1
    rows = pl.DataFrame([(i, f, v) for i, d in enumerate(docs) for f, v in d.items()], orient="row",
                        schema={"doc_idx": pl.Int64, "feature": pl.Int64, "value": pl.Float32})
    k = 2
    cfg = DiffConfig(top=None, keep_generic=True, exemplars=k, length_control=length_control)
    # overlapping slices: a document in both counts on both sides
    side_a = [i for i in range(n) if n_tokens[i] > 50]
    side_b = [i for i in range(n) if meta["grp"][i] == "x"]
    assert set(side_a) & set(side_b)
    r = diff_slices(store, "S", "n_tokens > 50", "grp = 'x'", config=cfg)
    groups = diff_by(store, "S", "grp", config=cfg)
    cases = [(r, side_a, side_b)]
    for g in ("x", "y", "z"):
        in_g = [i for i in range(n) if meta["grp"][i] == g]
        cases.append((groups[g], in_g, [i for i in range(n) if meta["grp"][i] != g]))
    for res, da, db in cases:
        assert (res.summary["n_a"], res.summary["n_b"]) == (len(da), len(db))
        ea, eb = _expected(rows, da, k), _expected(rows, db, k)
        assert set(res.frame["feature"].to_list()) == set(ea) | set(eb)
        for row in res.frame.iter_rows(named=True):
            f = row["feature"]
            for side, exp in (("a", ea), ("b", eb)):
                docs_n, mean, top = exp.get(f, (0, None, []))
                assert row[f"docs_{side}"] == docs_n
                assert row[f"mean_{side}"] == (pytest.approx(mean, rel=1e-12) if mean is not None else None)
                want = [snippet(f"S document {i}", 0, len(f"S document {i}"), cfg.snippet_width) for i in top]
                assert (row[f"exemplar_{side}"] or []) == want


def test_diff_by_one_pass_equals_each_group_diffed_alone(store, monkeypatch):
    from saeembed.analysis import diff_scan as diff_module
    from saeembed.analysis.diff import diff
    from saeembed.analysis.selection import Selection, select

    rng = np.random.default_rng(3)
    sae = register_sae(store)
    docs = _docs(rng, 240, {})
    gen = [str(g) for g in rng.choice(["m1", "m2", "m3", "m4"], 240)]
    for i in range(240):
        if gen[i] == "m2":
            docs[i] = docs[i] + [13]
    write_corpus(store, sae, "G", docs, meta={"gen": gen}, n_tokens=rng.integers(5, 90, 240).tolist())
    cfg = DiffConfig(top=None, keep_generic=True, length_control="on")
    grouped = diff_by(store, "G", "gen", config=cfg)
    whole = select(store, "G")
    for g, res in grouped.items():
        idx = np.array([i for i in range(240) if gen[i] == g])
        sa = Selection(whole.corpus, whole.sae, idx, f"gen = {g}")
        sb = Selection(whole.corpus, whole.sae, np.setdiff1d(whole.doc_idx, idx), f"gen != {g}")
        alone = diff(store, sa, sb, config=cfg)
        assert alone.frame.equals(res.frame) and alone.summary == res.summary
    assert grouped["m2"].frame["feature"][0] == 13
    monkeypatch.setattr(diff_module, "SCAN_MAX_BYTES", 0)  # too wide for one pass: one diff per group
    for g, res in diff_by(store, "G", "gen", config=cfg).items():
        assert res.frame.equals(grouped[g].frame) and res.summary == grouped[g].summary


def test_statistics_without_scipy_stats_are_scipys_exactly():
    from saeembed.stats import bh as _bh, chi2_sf_1 as _chi2_sf_1, mann_whitney_p as _mann_whitney_p

    rng = np.random.default_rng(0)
    for trial in range(300):
        n1, n2 = rng.integers(1, 40, 2) if trial % 2 else rng.integers(1, 3000, 2)
        hi = int(rng.choice([2, 6, 50, 500, 10**6]))
        x, y = rng.integers(0, hi, n1).astype(np.int32), rng.integers(0, hi, n2).astype(np.int32)
        if x.std() or y.std() or x[0] != y[0]:  # the diff's own guard (all lengths equal: p = 1)
            assert _mann_whitney_p(x, y) == float(stats.mannwhitneyu(x, y).pvalue)
        ps = rng.random(int(rng.integers(0, 500))) ** 3
        ps[: len(ps) // 4] = ps[0] if len(ps) else 0
        assert np.array_equal(_bh(ps), stats.false_discovery_control(ps))
    chi = np.concatenate([[0.0, 1e-12, 3.84, 1e3, np.inf], rng.exponential(4, 2000)])
    assert np.array_equal(_chi2_sf_1(chi), stats.chi2.sf(chi, 1))
