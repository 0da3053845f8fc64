"""Clustering on planted embeddings: two independent axes (topic features 1-6, style features 10-11)."""

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import adjusted_rand_score

from saeembed.analysis.cluster import cluster, clusterings
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
    # same name again replaces it
    cluster(store, "c", features=[10, 11], name="topics", min_cluster_size=10)
    assert clusterings(store, "c")["clusters"].to_list() == [2]
    assert store.query("SELECT count(*) AS n FROM cluster_assignments")["n"][0] == 90


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
