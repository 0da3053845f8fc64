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


def write_spanned(store, sae, name, docs):
    """A corpus whose document i has text docs[i][0] and fires, for each (feature, word) of docs[i][1],
    that feature (value 1.0) with its strongest token on the first occurrence of the word."""
    from saeembed.documents import Documents

    frame = pl.DataFrame({"doc_id": [f"{name}{i}" for i in range(len(docs))], "text": [t for t, _ in docs]})
    info = store.add_corpus(name, Documents(frame, "text", "id", [], "synthetic", 0))
    store.begin_encoding(info, sae, "synthetic-model", "layers.1", {})
    rows = []
    for i, (text, fires) in enumerate(docs):
        for f, word in fires:
            s = text.index(word)
            rows.append((i, f, 1.0, 1, s, s + len(word)))
    acts = pl.DataFrame(rows, schema={"doc_idx": pl.Int32, "feature": pl.Int32, "value": pl.Float32,
                                      "active_tokens": pl.Int32, "span_start": pl.Int32, "span_end": pl.Int32},
                        orient="row")
    stats = pl.DataFrame({"doc_idx": list(range(len(docs))), "n_tokens": [10] * len(docs), "n_windows": [1] * len(docs)},
                         schema={"doc_idx": pl.Int32, "n_tokens": pl.Int32, "n_windows": pl.Int32})
    store.write_encoded(info, sae, acts, stats)
    store.finish_encoding(info, sae)
    return store.corpus(name)


API_DOCS = [  # feature 8 fires on the word the property shows up as; 10 on parameter talk; 1 everywhere
    ("The old keyword is deprecated and will be removed; use size instead.", [(8, "deprecated"), (10, "keyword"), (1, "The")]),
    ("Deprecation warning: the axis argument is ignored.", [(8, "Deprecation"), (10, "argument"), (1, "the")]),
    ("This option was deprecated in version 2.0.", [(8, "deprecated"), (10, "option"), (1, "This")]),
    ("The size argument sets how many rows are read.", [(10, "argument"), (1, "The")]),
    ("The keyword arguments are passed to the reader.", [(10, "keyword"), (1, "The")]),
    ("Return the sum of the elements along an axis.", [(1, "Return")]),
    ("Open the file and read its lines.", [(1, "Open")]),
    ("Compute the mean of the values.", [(1, "Compute")]),
    ("Chop the onions and fry them.", [(2, "onions")]),  # unrelated features: what a real SAE mostly holds
    ("The striker scored twice.", [(3, "striker")]),
    ("Heavy rain is expected tonight.", [(4, "rain")]),
    ("She was born in July.", [(5, "July")]),
]


def test_lexical_matches_the_word_an_abstract_query_names(store):
    sae = register_sae(store, 16)
    write_spanned(store, sae, "api", API_DOCS)
    # labels that pull the sentence-embedding matcher away from 8, as imperfect offline labels do
    plant_labels(store, sae, {10: "function parameters and keyword arguments", 8: "software version numbers"})
    got = match_features(store, sae, "mentions a deprecated parameter", corpus="api", top=3, method="lexical")
    assert got["feature"].to_list() == [8] and got["score"][0] == pytest.approx(1.0)  # 3/3 exemplars
    assert "deprecat" in got["evidence"][0]
    described = match_features(store, sae, "mentions a deprecated parameter", corpus="api", top=16, method="describe")
    assert described["feature"][0] != 8  # describe alone misses it
    auto = match_features(store, sae, "mentions a deprecated parameter", corpus="api", top=16)
    rank = auto["feature"].to_list().index(8)
    assert rank < described["feature"].to_list().index(8) and rank <= 1  # lexical lifts it into the plan
    assert auto.row(rank, named=True)["lexical"] == pytest.approx(1.0)
    before = match_features(store, sae, "mentions a deprecated parameter", corpus="api", top=3, lexical_weight=0.0)
    assert "lexical" not in before.columns
    assert match_features(store, sae, "the of and", corpus="api", method="lexical").is_empty()


def test_query_terms_and_stems():
    from saeembed.interp.match_lexical import query_terms, same_stem

    assert query_terms("Mentions a deprecated parameter, the parameter!") == ["deprecated", "parameter"]
    assert same_stem("deprecated", "deprecation") and same_stem("charge", "charged") and same_stem("bool", "boolean")
    assert not same_stem("double", "duplicate") and not same_stem("an", "and")


TICKETS = [  # feature 4 fires on the angry tickets, 6 on polite ones (labelled as customer emails), 12 on others
    ("This is outrageous. I demand my money back right now!", [4]),
    ("Worst service ever, I am furious and cancelling my account.", [4]),
    ("Unacceptable! Nobody answers and I am sick of waiting.", [4]),
    ("Thank you so much for your kind help yesterday.", [6]),
    ("Many thanks, the replacement arrived and works well.", [6]),
    ("I appreciate the quick reply, have a lovely day.", [6]),
    ("The quarterly report is attached for review.", [12]),
    ("Meeting moved to Thursday at 3 pm.", [12]),
]


def test_prf_reaches_an_abstract_property_a_label_misleads(store):
    sae = register_sae(store, 16)
    write_corpus(store, sae, "tickets", [f for _, f in TICKETS], texts=[t for t, _ in TICKETS])
    plant_labels(store, sae, {6: "customer emails", 4: "exclamation marks", 12: "office scheduling"})
    described = match_features(store, sae, "angry customer", corpus="tickets", top=3, method="describe")
    assert described["feature"][0] == 6  # the label says "customer": the polite emails
    prf = match_features(store, sae, "angry customer", corpus="tickets", top=3, method="prf", prf_docs=3)
    assert prf["feature"][0] == 4 and "nearest" in prf["evidence"][0]
    auto = match_features(store, sae, "angry customer", corpus="tickets", top=3, prf_docs=3)
    assert auto["feature"][0] == 4
