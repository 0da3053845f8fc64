"""Clustering on planted embeddings: two independent axes (topic features 1-6, style features 10-11)."""

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import adjusted_rand_score

from saeembed.analysis.cluster import cluster, clusterings
from saeembed.analysis.cluster_compare import compare_saved
from saeembed.analysis.diff import diff_slices
from saeembed.analysis.retrieve import search
from saeembed.errors import InputError
from tests.synthetic import register_sae, write_corpus

TOPICS = [(1, 2), (3, 4), (5, 6)]
STYLES = [(10,), (11,)]


@pytest.fixture
def planted(store):
    rng = np.random.default_rng(0)
    sae = register_sae(store, 32)
    docs, topic, style = [], [], []
    for i in range(90):
        t, s = i % 3, (i // 3) % 2
        d = {f: float(rng.uniform(0.5, 1.5)) for f in TOPICS[t] + STYLES[s]}
        d[20 + int(rng.integers(0, 5))] = float(rng.uniform(0.1, 0.3))  # a little unrelated noise
        docs.append(d)
        topic.append(t)
        style.append(s)
    write_corpus(store, sae, "c", docs, meta={"topic": topic, "style": style})
    store.con.execute("INSERT INTO feature_labels (sae_key, feature, label, source) VALUES (?, 3, 'sports', 't')",
                      [sae.sae_key])
    return store, np.array(topic), np.array(style)


def test_features_steer_the_clusters(planted):
    store, topic, style = planted
    by_topic = cluster(store, "c", features=[1, 2, 3, 4, 5, 6], name="t", min_cluster_size=10)
    by_style = cluster(store, "c", features=[10, 11], name="s", min_cluster_size=10)
    assert adjusted_rand_score(topic, by_topic.assignments["cluster"]) == pytest.approx(1.0)
    assert adjusted_rand_score(style, by_style.assignments["cluster"]) == pytest.approx(1.0)
    assert adjusted_rand_score(style, by_topic.assignments["cluster"]) == pytest.approx(0.0, abs=0.05)
    # descriptions name the planted features of each cluster, with labels and exemplars
    d = by_topic.descriptions
    for c in range(3):
        members = topic[by_topic.assignments["cluster"].to_numpy() == c]
        planted_feats = set(TOPICS[members[0]])
        assert set(d.filter(pl.col("cluster") == c)["feature"][:2]) == planted_feats
        assert d.filter(pl.col("cluster") == c)["freq_in"][0] == 1.0
    assert d.filter(pl.col("feature") == 3)["label"][0] == "sports"
    assert d["exemplar"].null_count() == 0
    assert by_topic.clusters["size"].sum() == 90 and by_topic.n_noise == 0


def test_hdbscan_on_a_sample_assigns_the_rest_to_their_nearest(planted):
    store, topic, _ = planted
    full = cluster(store, "c", features=[1, 2, 3, 4, 5, 6], save=False, min_cluster_size=10)
    part = cluster(store, "c", features=[1, 2, 3, 4, 5, 6], save=False, min_cluster_size=10, max_fit=45, seed=2)
    assert adjusted_rand_score(topic, part.assignments["cluster"]) == pytest.approx(1.0)
    again = cluster(store, "c", features=[1, 2, 3, 4, 5, 6], save=False, min_cluster_size=10, max_fit=45, seed=2)
    assert part.assignments["cluster"].to_list() == again.assignments["cluster"].to_list()
    assert part.params["max_fit"] == 45 and full.n_noise == 0


def test_kmeans_and_hdbscan_are_stable_with_a_seed(planted):
    store, topic, _ = planted
    a = cluster(store, "c", save=False, seed=3)  # all features, HDBSCAN
    b = cluster(store, "c", save=False, seed=3)
    assert a.assignments["cluster"].to_list() == b.assignments["cluster"].to_list()
    assert np.allclose(a.assignments["x"], b.assignments["x"])
    k1 = cluster(store, "c", k=6, save=False, seed=1)
    k2 = cluster(store, "c", k=6, save=False, seed=1)
    assert k1.assignments["cluster"].to_list() == k2.assignments["cluster"].to_list()
    assert k1.clusters.height == 6 and k1.n_noise == 0


def test_noise_and_empty_rows_are_reported(planted):
    store, topic, _ = planted
    # feature 20 fires in ~1/5 of documents: the rest have none of the chosen features
    r = cluster(store, "c", features=[20, 1], save=False, min_cluster_size=5)
    n_empty = int(store.query("SELECT count(DISTINCT doc_idx) AS n FROM activations WHERE feature IN (1, 20)")["n"][0])
    assert r.n_empty == 90 - n_empty
    assert r.n_noise >= r.n_empty
    noise_row = r.clusters.filter(pl.col("cluster") == -1)
    assert noise_row["size"][0] == r.n_noise and noise_row["description"][0].startswith("noise")


def test_saved_clustering_is_a_filter_column(planted):
    store, topic, _ = planted
    r = cluster(store, "c", features=[1, 2, 3, 4, 5, 6], name="topics", min_cluster_size=10)
    saved = clusterings(store, "c")
    assert saved["name"].to_list() == ["topics"] and saved["clusters"][0] == 3 and saved["docs"][0] == 90
    target = int(r.assignments.filter(pl.col("doc_idx") == 0)["cluster"][0])  # doc 0 has topic 0
    got = search(store, "c", features=[10, 11], where=f"cluster.topics = {target}", top=100)
    assert got.height == 30
    assert set(topic[got["doc_idx"].to_numpy()]) == {0}
    # the same name again is refused, before any work and without touching what is saved
    with pytest.raises(InputError, match=r"'topics' is already saved \(of corpus 'c'\); pass --replace"):
        cluster(store, "c", features=[10, 11], name="topics", min_cluster_size=10)
    assert clusterings(store, "c")["clusters"].to_list() == [3]
    again = cluster(store, "c", features=[10, 11], name="topics", min_cluster_size=10, replace=True)
    assert again.replaced and not r.replaced
    assert clusterings(store, "c")["clusters"].to_list() == [2]
    assert store.query("SELECT count(*) AS n FROM cluster_assignments")["n"][0] == 90
    # not saving never conflicts
    assert cluster(store, "c", features=[10, 11], name="topics", save=False, min_cluster_size=10).clustering_id is None


def test_bad_options(planted):
    store, _, _ = planted
    with pytest.raises(InputError, match="not both"):
        cluster(store, "c", axis="x", features=[1])
    with pytest.raises(InputError, match="name"):
        cluster(store, "c", features=[1], name="bad name; drop")
    with pytest.raises(InputError, match="k"):
        cluster(store, "c", k=1)
    with pytest.raises(InputError, match="nothing to cluster"):
        cluster(store, "c", features=[31])


def test_axis_picks_labelled_features_and_steers(planted):
    store, topic, style = planted
    labels = {1: "cooking recipes", 2: "kitchen food", 3: "sports", 4: "football games", 5: "stock markets",
              6: "finance and banks", 10: "formal polite tone of voice", 11: "casual slangy tone of voice"}
    store.con.execute("DELETE FROM feature_labels")
    for f, lab in labels.items():
        store.con.execute("INSERT INTO feature_labels (sae_key, feature, label, source) VALUES (1, ?, ?, 't')", [f, lab])
    by_tone = cluster(store, "c", axis="tone of voice", n_features=2, k=2, save=False)
    assert set(by_tone.features["feature"]) == {10, 11}
    assert adjusted_rand_score(style, by_tone.assignments["cluster"]) == pytest.approx(1.0)
    by_subject = cluster(store, "c", axis="food, sport and money", n_features=6, k=3, save=False)
    assert set(by_subject.features["feature"]) == {1, 2, 3, 4, 5, 6}
    assert adjusted_rand_score(topic, by_subject.assignments["cluster"]) == pytest.approx(1.0)


def test_compare_column_crosstab_purity_ari_nmi(planted):
    from sklearn.metrics import adjusted_rand_score as ari, normalized_mutual_info_score as nmi

    store, topic, style = planted
    r = cluster(store, "c", features=[1, 2, 3, 4, 5, 6], name="t", min_cluster_size=10, compare_column="style")
    labels = r.assignments["cluster"].to_numpy()
    crosstab, m = r.comparison
    assert m["ari"] == pytest.approx(ari(style, labels)) and m["nmi"] == pytest.approx(nmi(style, labels))
    assert m["ari"] == pytest.approx(0.0, abs=0.05)  # topic clusters say nothing of style
    # each topic cluster holds 15 documents of each style: purity 0.5
    assert m["purity"] == pytest.approx(0.5) and m["n_docs"] == 90 and m["n_noise"] == 0
    assert crosstab.columns == ["cluster", "size", "0", "1", "top_value", "top_share"]
    assert crosstab["0"].to_list() == [15, 15, 15] and crosstab["size"].to_list() == [30, 30, 30]
    # the saved clustering against the column it was built to find, read back from the store
    crosstab, m = compare_saved(store, "t", "topic")
    assert (m["purity"], m["ari"], m["nmi"]) == pytest.approx((1.0, 1.0, 1.0))
    for row in crosstab.iter_rows(named=True):
        assert row["top_share"] == 1.0 and row[row["top_value"]] == 30
    with pytest.raises(InputError, match="no column 'nope'"):
        cluster(store, "c", features=[1], save=False, compare_column="nope")


def test_compare_counts_noise_and_missing_values_apart(store):
    rng = np.random.default_rng(1)
    sae = register_sae(store, 32)
    docs, group = [], []
    for i in range(60):
        g = i % 2
        docs.append({(1 if g else 2): 1.0, 20 + int(rng.integers(0, 3)): 0.2} if i < 56 else {30: 1.0})
        group.append(None if i % 10 == 9 else ["x", "y"][g])
    write_corpus(store, sae, "g", docs, meta={"grp": group})
    r = cluster(store, "g", features=[1, 2], name="gg", min_cluster_size=5, compare_column="grp")
    crosstab, m = r.comparison
    labels = r.assignments["cluster"].to_numpy()
    assert m["n_noise"] == int((labels < 0).sum()) >= 4  # the 4 documents without features 1 and 2
    scored = (labels >= 0) & np.array([g is not None for g in group])
    assert m["n_docs"] == scored.sum() and m["n_missing"] == int(((labels >= 0) & ~scored).sum()) == 5
    assert m["purity"] == 1.0
    noise = crosstab.filter(pl.col("cluster") == -1).row(0, named=True)
    assert noise["size"] == m["n_noise"]
    assert crosstab["size"].sum() == 60


@pytest.mark.parametrize("lengths", ["equal", "separated"])
def test_diff_of_a_saved_cluster_agrees_with_its_description(store, lengths):
    """`cluster --name X` then `diff --where "cluster.X = N"`: the diff's top features are the cluster
    description's over-represented ones, also when the cluster is exactly the long documents (a
    length-stratified test alone can then find nothing: no stratum holds both sides)."""
    rng = np.random.default_rng(2)
    sae = register_sae(store, 64)
    docs, n_tokens = [], []
    for i in range(500):
        inside = i % 5 == 0
        f = {x for x in range(20, 60) if rng.random() < 0.1}
        f |= {x for x in (1, 2, 3) if rng.random() < (0.8 if inside else 0.27)}
        f.add(7 if inside else 8)
        docs.append(sorted(f))
        n_tokens.append(int(rng.integers(500, 1000)) if inside and lengths == "separated" else int(rng.integers(10, 50)))
    write_corpus(store, sae, "c", docs, n_tokens=n_tokens)
    r = cluster(store, "c", features=[7, 8], k=2, name="X")
    c = int(r.assignments.filter(pl.col("doc_idx") == 0)["cluster"][0])
    assert r.clusters.filter(pl.col("cluster") == c)["size"][0] == 100
    described = r.descriptions.filter(pl.col("cluster") == c)
    assert set(described["feature"][:4]) == {7, 1, 2, 3} and r.n_noise == 0
    d = diff_slices(store, "c", f"cluster.X = {c}")
    assert (d.summary["n_a"], d.summary["n_b"]) == (100, 400)
    first = d.frame.filter(pl.col("ranking") == "raw") if "ranking" in d.frame.columns else d.frame
    over = first.filter(pl.col("more_in") == "A")
    assert set(over["feature"][:4]) == {7, 1, 2, 3}
    assert first.filter(pl.col("more_in") == "B")["feature"][0] == 8  # the other cluster's feature
    assert d.summary["significant_q05"] >= 4
    for row in described.iter_rows(named=True):  # the same frequencies and the same test on both sides
        got = first.filter(pl.col("feature") == row["feature"]).row(0, named=True)
        assert (got["freq_a"], got["freq_b"]) == pytest.approx((row["freq_in"], row["freq_out"]))
        assert got["q_value"] == pytest.approx(row["q_value"])
    assert r.clusters.filter(pl.col("cluster") == c)["features_q05"][0] == d.summary["significant_q05"]
    median = r.clusters.filter(pl.col("cluster") == c)["median_tokens"][0]
    assert (median > 400) == (lengths == "separated")


@pytest.fixture
def store_file(tmp_path):
    from saeembed.store import Store

    path = tmp_path / "s.duckdb"
    with Store(path) as st:
        sae = register_sae(st, 32)
        docs = [{f: 1.0 for f in TOPICS[i % 3] + STYLES[(i // 3) % 2]} for i in range(90)]
        write_corpus(st, sae, "c", docs, meta={"topic": [f"t{i % 3}" for i in range(90)],
                                                "style": [(i // 3) % 2 for i in range(90)]})
    return path


def test_cli_refuses_to_overwrite_and_compares(capsys, monkeypatch, store_file):
    import json

    from tests.test_cli import run

    args = ["cluster", "c", "-f", "1,2,3,4,5,6", "--k", "3", "--name", "t", "-s", store_file]
    code, out, err = run(capsys, monkeypatch, *args)
    assert code == 0, err
    assert "saved as t;" in err and "cluster.t = 0" in err
    code, out, err = run(capsys, monkeypatch, *args)
    assert code == 1 and "Traceback" not in err
    assert "'t' is already saved (of corpus 'c'); pass --replace" in err and len(err.strip().splitlines()) == 1
    code, out, err = run(capsys, monkeypatch, *args, "--overwrite", "--compare-column", "topic", "--json")
    assert code == 0, err
    got = json.loads(out)
    assert got["saved"] and got["replaced"] and got["name"] == "t"
    assert (got["purity"], got["ari"], got["nmi"]) == pytest.approx((1.0, 1.0, 1.0))
    assert sorted(r["size"] for r in got["crosstab"]) == [30, 30, 30]
    assert {r["top_value"] for r in got["crosstab"]} == {"t0", "t1", "t2"}
    code, out, err = run(capsys, monkeypatch, *args, "--replace", "--compare-column", "style")
    assert code == 0, err
    assert "replaced the clustering saved as t" in err and "clusters × style" in out
    assert "purity 0.500" in err and "ARI " in err and "NMI " in err
    # a saved clustering, compared later without clustering again
    code, out, err = run(capsys, monkeypatch, "cluster", "--saved", "t", "--compare-column", "topic", "-s", store_file,
                         "--json")
    assert code == 0, err
    got = json.loads(out)
    assert {"crosstab", "purity", "ari", "nmi"} <= set(got) and got["ari"] == pytest.approx(1.0)
    assert got["comparison"]["n_docs"] == 90 and got["comparison"]["column"] == "topic"
    code, out, err = run(capsys, monkeypatch, "cluster", "--saved", "t", "--compare-column", "topic", "-s", store_file,
                         "--csv")
    assert code == 0 and out.splitlines()[0] == "cluster,size,t0,t1,t2,top_value,top_share"
    for bad, says in ((["--k", "3"], "drop --k"), ([], "needs --compare-column")):
        extra = ["--compare-column", "topic"] if bad else []
        code, _, err = run(capsys, monkeypatch, "cluster", "--saved", "t", *bad, *extra, "-s", store_file)
        assert code == 1 and says in err
    code, _, err = run(capsys, monkeypatch, "cluster", "--saved", "nope", "--compare-column", "topic", "-s", store_file)
    assert code == 1 and "no saved clustering named 'nope'" in err
    code, _, err = run(capsys, monkeypatch, "cluster", "c", "-f", "1,2", "--compare-column", "nope", "--no-save",
                       "-s", store_file)
    assert code == 1 and "no column 'nope'" in err


def test_a_small_cluster_says_what_diff_says(store):
    """A 6-document cluster where feature 1 fires on 5 of its documents and on 25 % of the rest: its
    description shows that tendency with diff's q-value (not significant after 4,000 tests), and counts,
    as diff does, the features that hold at q <= 0.05: only feature 7, which it was clustered on (8, on
    92 % of the documents, is generic and not tested, in both)."""
    from scipy.stats import fisher_exact

    rng = np.random.default_rng(5)
    sae = register_sae(store, 4096)
    docs = []
    for i in range(80):
        f = {int(x) for x in rng.choice(np.arange(100, 4096), 60, replace=False)}
        f |= {7} if i < 6 else {8}
        if (i < 6 and i != 0) or (i >= 6 and rng.random() < 0.25):
            f.add(1)
        docs.append(sorted(f))
    write_corpus(store, sae, "s", docs)
    r = cluster(store, "s", features=[7, 8], k=2, name="small")
    c = int(r.assignments.filter(pl.col("doc_idx") == 0)["cluster"][0])
    top = r.descriptions.filter((pl.col("cluster") == c) & (pl.col("feature") == 1)).row(0, named=True)
    in_rest = sum(1 in d for d in docs[6:])
    assert (top["freq_in"], top["freq_out"]) == pytest.approx((5 / 6, in_rest / 74))
    p = fisher_exact([[5, 1], [in_rest, 74 - in_rest]]).pvalue
    assert p < 0.05 and top["q_value"] > 0.05 and top["q_value"] >= p  # raw p small; not after 4,000 tests
    d = diff_slices(store, "s", f"cluster.small = {c}")
    assert r.clusters.filter(pl.col("cluster") == c)["features_q05"][0] == d.summary["significant_q05"] == 1
