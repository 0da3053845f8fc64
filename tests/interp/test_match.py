"""Query -> feature mapping on stores with planted labels and planted exemplars (real sentence model)."""

import polars as pl
import pytest

from saeembed.errors import InputError
from saeembed.interp.match import match_features
from tests.synthetic import register_sae, write_corpus

LABELS = {
    3: "dates: days of the month, months and years",
    5: "cooking recipes and food ingredients",
    7: "football and soccer matches",
    9: "computer programming and source code",
    11: "weather, rain and storms",
}

DOCS = [  # (text, features it fires)
    ("The meeting is on 14 March 2021.", [3, 1]),
    ("She was born on July 4th, 1990.", [3, 1]),
    ("Mix flour, butter and eggs, then bake for 20 minutes.", [5, 1]),
    ("Chop the onions and fry them with garlic.", [5]),
    ("The striker scored twice in the second half.", [7, 1]),
    ("Our goalkeeper saved a penalty in the final.", [7]),
    ("The function returns a list of integers.", [9, 1]),
    ("Heavy rain and thunderstorms are expected tonight.", [11, 1]),
]


def plant_labels(store, sae, labels):
    for f, lab in labels.items():
        store.con.execute("INSERT INTO feature_labels (sae_key, feature, label, source) VALUES (?, ?, ?, 'test')",
                          [sae.sae_key, f, lab])


@pytest.fixture
def planted(store):
    sae = register_sae(store, 16)
    write_corpus(store, sae, "mix", [f for _, f in DOCS], texts=[t for t, _ in DOCS])
    return store, sae


def test_labels_map_queries_to_the_planted_features(planted):
    store, sae = planted
    plant_labels(store, sae, LABELS)
    for query, want in [("mentions a specific date", 3), ("a recipe for dinner", 5), ("soccer game", 7),
                        ("python code", 9), ("bad weather", 11)]:
        got = match_features(store, sae, query, top=3, method="describe")
        assert got.columns[:4] == ["feature", "score", "label", "evidence"]
        assert got["feature"][0] == want, (query, got)
        assert got["label"][0] == LABELS[want]
        assert got["score"].is_sorted(descending=True)


def test_exemplars_describe_unlabelled_features(planted):
    store, sae = planted  # no labels: the exemplar texts are the only description
    got = match_features(store, sae, "a recipe for dinner", corpus="mix", top=3, method="describe")
    assert got["feature"][0] == 5
    assert got["label"][0] is None and "exemplars" in got["evidence"][0]
    # corpus= restricts candidates to features that fire in it: 0, 2, 4... never come back
    assert set(match_features(store, sae, "anything", corpus="mix", top=16, method="describe")["feature"]) <= {1, 3, 5, 7, 9, 11}


def test_feature_vectors_are_cached_and_refreshed_when_a_label_changes(planted, monkeypatch):
    from saeembed.encode.dense import get_embedder

    store, sae = planted
    plant_labels(store, sae, LABELS)
    match_features(store, sae, "date", method="describe")
    n_cached = store.query("SELECT count(*) AS n FROM feature_embeddings")["n"][0]
    assert n_cached == 6  # 5 labels + feature 1 (exemplars only)
    embedder = get_embedder(None)
    seen = []
    real = embedder.embed
    monkeypatch.setattr(embedder, "embed", lambda texts, progress=None: (seen.append(list(texts)), real(texts))[1])
    match_features(store, sae, "date", method="describe")
    assert seen == [["date"]]  # only the query was embedded
    plant_labels(store, sae, {5: "thunder and lightning"})
    seen.clear()
    got = match_features(store, sae, "a thunderstorm", method="describe", top=2)
    assert seen == [["thunder and lightning"], ["a thunderstorm"]]
    assert store.query("SELECT count(*) AS n FROM feature_embeddings")["n"][0] == 6
    assert 5 in got["feature"].to_list()


def test_prf_finds_features_of_the_nearest_documents(planted):
    store, sae = planted
    got = match_features(store, sae, "baking a cake", corpus="mix", top=3, method="prf", prf_docs=2)
    assert got["feature"][0] == 5  # both nearest docs are recipes; feature 1 also fires on 5/8 of all docs
    assert "nearest" in got["evidence"][0]
    auto = match_features(store, sae, "baking a cake", corpus="mix", top=3, prf_docs=2)
    assert auto["feature"][0] == 5 and auto.columns[:4] == ["feature", "score", "label", "evidence"]


def test_matcher_hook_and_errors(planted):
    store, sae = planted

    def fake(store, sae, query, *, corpus=None, top=10, **_):
        return pl.DataFrame({"feature": [2, 4], "score": [0.1, 0.9], "label": [None, "x"], "evidence": ["a", "b"]})

    got = match_features(store, sae, "whatever", matcher=fake)
    assert got["feature"].to_list() == [4, 2]
    with pytest.raises(InputError, match="unknown feature matcher"):
        match_features(store, sae, "x", method="nope")
    with pytest.raises(InputError, match="empty query"):
        match_features(store, sae, "   ")
    with pytest.raises(InputError, match="needs a corpus"):
        match_features(store, sae, "x", method="prf")


def test_interrupted_description_embedding_keeps_finished_blocks(planted, monkeypatch):
    """The first text query embeds every feature description; stopping it part-way (Ctrl-C) keeps
    the blocks already embedded, so the next query only embeds the rest."""
    from saeembed.encode.dense import get_embedder
    from saeembed.interp import match

    store, sae = planted
    plant_labels(store, sae, LABELS)
    texts = match.feature_texts(store, sae)
    real = get_embedder(None)

    class StopsOnSecondBlock:  # the real embedder, interrupted like a user pressing Ctrl-C
        name, dim, calls = real.name, real.dim, []

        def embed(self, batch, progress=None):
            self.calls.append(len(batch))
            if len(self.calls) == 2:
                raise KeyboardInterrupt
            return real.embed(batch, progress=progress)

    monkeypatch.setattr(match, "VECTOR_BLOCK", 2)
    with pytest.raises(KeyboardInterrupt):
        match.feature_vectors(store, sae, texts, StopsOnSecondBlock())
    kept = store.query("SELECT feature FROM feature_embeddings WHERE sae_key = ? ORDER BY feature", [sae.sae_key])
    assert kept["feature"].to_list() == texts["feature"].to_list()[:2]
    vectors = match.feature_vectors(store, sae, texts, real)  # the rest, then all from the cache
    assert store.query("SELECT count(*) AS n FROM feature_embeddings")["n"][0] == texts.height
    expect = real.embed(texts["text"].to_list())
    assert abs(vectors - expect).max() < 1e-5
