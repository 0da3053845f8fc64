"""Axes of variation on a planted corpus: 2 languages x 2 topics x 2 forms, each value with its own
features, and texts that carry the same three axes (English or German words; cooking or money; SHOUTED
or plain, which the uncased sentence model cannot see). Kinds use the real embedded sentence model."""

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from saeembed.analysis.axes import AxisConfig, axes_table, choose_axis, discover_axes, name_kind
from saeembed.analysis.cluster import cluster
from saeembed.analysis.selection import select
from saeembed.errors import InputError
from tests.synthetic import register_sae, write_corpus

LANGUAGE = [(1, 2, 3, 4), (5, 6, 7, 8)]  # strongest axis: most features per value
TOPIC = [(10, 11, 12), (13, 14, 15)]
FORM = [(20, 21), (22, 23)]
FILLER = ["as we said before, this is what we do and what we like to do every day",  # a text's common words
          "wie wir schon sagten, das ist es, was wir tun und was wir jeden Tag gerne tun"]
WORDS = {  # (language, topic) -> sentence parts
    (0, 0): ("the chef and the cook", "bake bread with butter, garlic and onions in the oven", "for a tasty dinner"),
    (0, 1): ("the banker and the trader", "invest money in stocks, bonds and shares at the bank", "for a higher profit"),
    (1, 0): ("der Koch und die Köchin", "backen Brot mit Butter, Knoblauch und Zwiebeln im Ofen", "für ein leckeres Essen"),
    (1, 1): ("der Bankier und die Händlerin", "legen Geld in Aktien, Anleihen und Fonds bei der Bank an",
             "für einen höheren Gewinn"),
}


@pytest.fixture
def planted(store):
    rng = np.random.default_rng(0)
    sae = register_sae(store, 64)
    docs, texts, truth = [], [], {"language": [], "topic": [], "form": []}
    for i in range(160):
        lang, topic, form = i % 2, (i // 2) % 2, (i // 4) % 2
        d = {f: float(rng.uniform(0.5, 1.5)) for f in LANGUAGE[lang] + TOPIC[topic] + FORM[form]}
        for f in rng.choice(np.arange(40, 64), 3, replace=False):  # unrelated noise
            d[int(f)] = float(rng.uniform(0.1, 0.5))
        who, what, why = WORDS[(lang, topic)]
        text = f"{FILLER[lang]}: {who} {what} {why}. {FILLER[lang]} (note {i})"
        texts.append(text.upper() if form == 0 else text)
        docs.append(d)
        for axis, value in zip(truth, (lang, topic, form)):
            truth[axis].append(value)
    write_corpus(store, sae, "c", docs, texts=texts)
    return store, {k: np.array(v) for k, v in truth.items()}


def test_finds_the_planted_axes_strongest_first_with_their_kinds(planted):
    store, truth = planted
    axes = discover_axes(store, select(store, "c"), AxisConfig(k=2))
    assert [a.kind for a in axes] == ["language", "content", "form"]
    for axis, name, planted_feats in zip(axes, ["language", "topic", "form"], [LANGUAGE, TOPIC, FORM]):
        assert adjusted_rand_score(truth[name], axis.groups) == pytest.approx(1.0)
        want = {f for group in planted_feats for f in group}
        assert set(axis.features.tolist()) == want  # noise features belong to no axis
        assert axis.eta2.min() > 0.9 and axis.lift > 3
    assert axes[0].strength >= axes[1].strength >= axes[2].strength > 3 * axes[0].chance
    assert axes[0].word_overlap < 0.25 <= axes[1].word_overlap
    assert axes[2].semantic_share < 0.1 < 0.4 <= axes[1].semantic_share  # SHOUTED = plain to an uncased model


def test_a_name_picks_the_axis_of_its_kind(planted):
    store, truth = planted
    axes = discover_axes(store, select(store, "c"), AxisConfig(k=2))
    assert name_kind("topic")[0] == "content"
    assert name_kind("writing style")[0] == "form"
    for name, number in [("topic", 2), ("subject matter", 2), ("writing style", 3), ("tone", 3), ("language", 1),
                         ("3", 3)]:
        axis, why = choose_axis(axes, name)
        assert axis.number == number, (name, why)
    with pytest.raises(InputError, match="axis 4 does not exist"):
        choose_axis(axes, "4")
    table = axes_table(store, select(store, "c"), axes, top=2)
    assert table["axis"].to_list() == [1, 2, 3] and table["group_sizes"][0].to_list() == [80, 80]
    assert set(table["features"][1].to_list()) <= {10, 11, 12, 13, 14, 15}


def test_cluster_along_a_named_axis_without_labels(planted):
    store, truth = planted
    for name, axis in [("topic", "topic"), ("writing style", "form"), ("language", "language")]:
        r = cluster(store, "c", axis=name, k=2, save=False)
        assert adjusted_rand_score(truth[axis], r.assignments["cluster"]) == pytest.approx(1.0), name
        others = [a for a in truth if a != axis]
        assert all(abs(adjusted_rand_score(truth[o], r.assignments["cluster"])) < 0.05 for o in others)
        assert r.params["axis_found"]["kind"] == {"topic": "content", "form": "form", "language": "language"}[axis]
    by_number = cluster(store, "c", axis="2", k=2, save=False)
    assert set(by_number.features["feature"]) == {10, 11, 12, 13, 14, 15}
    assert by_number.features["evidence"][0].startswith("axis 2 (content)")


def test_labels_close_to_the_name_are_used_and_offline_labels_are_not(planted):
    store, truth = planted
    for f in range(64):  # offline labels are a feature's own words: still the axes route
        store.con.execute("INSERT INTO feature_labels (sae_key, feature, label, source) VALUES (1, ?, ?, 'offline')",
                          [f, f"word{f}"])
    assert cluster(store, "c", axis="topic", k=2, save=False).params["axis_found"] is not None
    labels = {10: "cooking and baking", 11: "kitchen food", 12: "bread and butter", 13: "banking and money",
              14: "stock markets", 15: "finance and profit"}
    for f in range(64):
        store.con.execute("INSERT INTO feature_labels (sae_key, feature, label, source) VALUES (1, ?, ?, 'llm')",
                          [f, labels.get(f, f"unrelated thing {f}")])
    r = cluster(store, "c", axis="food or finance", n_features=6, k=2, save=False)
    assert r.params["axis_found"] is None and set(r.features["feature"]) == {10, 11, 12, 13, 14, 15}
    assert adjusted_rand_score(truth["topic"], r.assignments["cluster"]) == pytest.approx(1.0)
    # an abstract name close to no label still finds its axis
    r = cluster(store, "c", axis="writing style", k=2, save=False)
    assert r.params["axis_found"]["kind"] == "form" and set(r.features["feature"]) == {20, 21, 22, 23}


def test_no_axis_in_noise_is_said_and_names_fall_back_to_descriptions(store):
    rng = np.random.default_rng(1)
    sae = register_sae(store, 64)
    docs = [{int(f): 1.0 for f in rng.choice(64, 4, replace=False)} for _ in range(120)]
    write_corpus(store, sae, "noise", docs)
    assert discover_axes(store, select(store, "noise")) == []
    with pytest.raises(InputError, match="no axis of variation stands out"):
        cluster(store, "noise", axis="1", k=2, save=False)
    # by name, it falls back to matching feature descriptions, and says so
    r = cluster(store, "noise", axis="topic", k=2, save=False, n_features=5)
    assert r.params["axis_found"]["number"] is None and "instead" in r.params["axis_found"]["why"]
    assert r.features.height == 5 and r.features["evidence"][0].startswith("exemplars")


def test_axes_and_cluster_cli(capsys, monkeypatch, planted):
    import json

    from tests.test_cli import run

    store, truth = planted
    path = str(store.path)
    store.close()
    code, out, err = run(capsys, monkeypatch, "axes", "c", "--k", "2", "--store", path, "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert [r["kind"] for r in rows] == ["language", "content", "form"]
    assert rows[1]["lift"] > 3 and set(rows[1]["features"]) <= {10, 11, 12, 13, 14, 15}
    code, out, err = run(capsys, monkeypatch, "axes", "c", "--k", "2", "--store", path)
    assert code == 0 and "content" in out and "saeembed cluster c --axis 1" in err
    code, out, err = run(capsys, monkeypatch, "cluster", "c", "--axis", "writing style", "--k", "2", "--no-save",
                         "--store", path, "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["axis"]["number"] == 3 and res["axis"]["kind"] == "form"
    assert {f["feature"] for f in res["features"]} == {20, 21, 22, 23}
    code, out, err = run(capsys, monkeypatch, "cluster", "c", "--axis", "writing style", "--k", "2", "--no-save",
                         "--store", path)
    assert code == 0 and "reads as a form axis" in err
    code, out, err = run(capsys, monkeypatch, "cluster", "c", "--axis", "9", "--k", "2", "--store", path)
    assert code != 0 and "axis 9 does not exist" in err and "Traceback" not in err


def test_eta2_is_chi_square_over_n_and_shuffling_keeps_frequencies():
    import scipy.sparse as sp
    from scipy.stats import chi2_contingency

    from saeembed.analysis.axes import _eta2, _shuffled

    rng = np.random.default_rng(3)
    groups = rng.integers(0, 3, 200)
    dense = (rng.random((200, 6)) < np.array([0.1, 0.3, 0.5, 0.7, 0.2, 0.4])).astype(float)
    dense[:, 5] = groups == 1  # one column the groups explain completely
    B = sp.csc_matrix(dense)
    want = []
    for j in range(6):
        table = np.array([[np.sum((groups == g) & (dense[:, j] == v)) for g in range(3)] for v in (0, 1)])
        want.append(chi2_contingency(table, correction=False)[0] / 200)
    assert np.allclose(_eta2(B, groups), want)
    assert _eta2(B, groups)[5] == pytest.approx(1.0)
    S = _shuffled(B, rng)
    assert np.array_equal(np.diff(S.indptr), np.diff(B.indptr))  # same documents per feature
    assert not np.array_equal(S.toarray(), dense) and set(np.unique(S.toarray())) <= {0.0, 1.0}


def test_k_means_takes_up_to_200_features_of_a_found_axis_hdbscan_50(store):
    """An axis spread over many features (a wide SAE): k-means clusters on up to N_AXIS_KMEANS of them,
    HDBSCAN and --n-features as asked."""
    from saeembed.analysis.cluster import N_AXIS_KMEANS, N_MATCHED

    rng = np.random.default_rng(0)
    sae = register_sae(store, 400)
    values = [np.arange(0, 120), np.arange(120, 240)]  # two topics of 120 features each
    docs, texts, topic = [], [], []
    for i in range(200):
        t = i % 2
        on = values[t][rng.random(120) < 0.5]  # each document fires half of its topic's features
        d = {int(f): float(rng.uniform(0.5, 1.5)) for f in on}
        d.update({int(f): 0.3 for f in rng.choice(np.arange(300, 400), 3, replace=False)})
        docs.append(d)
        texts.append(["bake bread with butter in the oven", "invest money in stocks at the bank"][t] + f" ({i})")
        topic.append(t)
    write_corpus(store, sae, "c", docs, texts=texts)
    km = cluster(store, "c", axis="1", k=2, save=False)
    n_axis = km.features.height
    assert N_MATCHED < n_axis <= N_AXIS_KMEANS and set(km.features["feature"]) <= set(range(240))
    assert n_axis > 150  # most of the 240 features belong to the axis, and k-means gets them all
    assert adjusted_rand_score(topic, km.assignments.sort("doc_idx")["cluster"]) == pytest.approx(1.0)
    assert cluster(store, "c", axis="1", save=False, min_cluster_size=20).features.height == N_MATCHED
    assert cluster(store, "c", axis="1", k=2, n_features=10, save=False).features.height == 10
