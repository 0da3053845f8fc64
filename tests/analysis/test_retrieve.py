"""Search and similar on planted sparse embeddings: scores checked by hand, filters, fusion, spans."""

import numpy as np
import polars as pl
import pytest

from saeembed.analysis.retrieve import highlight, parse_feature_weights, search, similar
from saeembed.errors import FilterError, InputError, UnknownFeatureError
from tests.synthetic import register_sae, write_corpus

DOCS = [{1: 2.0, 2: 1.0}, {1: 1.0}, {2: 1.5, 3: 1.0}, {1: 4.0, 3: 5.0}, {4: 1.0}]
TEXTS = ["alpha beta", "gamma", "delta epsilon", "zeta eta theta", "iota"]


@pytest.fixture
def planted(store):
    sae = register_sae(store, 16)
    write_corpus(store, sae, "c", DOCS, texts=TEXTS, meta={"grp": ["a", "a", "b", "b", "a"]})
    return store


def test_scores_by_hand(planted):
    # scale = corpus max per feature: f1 4.0, f2 1.5. weights f1 2, f2 1.
    got = search(planted, "c", features=["1:2", 2], top=10)
    want = {"c3": 2 * 4 / 4, "c0": 2 * 2 / 4 + 1 / 1.5, "c2": 1.5 / 1.5, "c1": 2 * 1 / 4}
    assert got["doc_id"].to_list() == ["c3", "c0", "c2", "c1"]
    assert np.allclose(got["score"].to_numpy(), [want[d] for d in got["doc_id"]])
    assert got["rank"].to_list() == [1, 2, 3, 4]
    row = got.row(1, named=True)  # c0: both features, f1 contributes 1.0, f2 0.667
    assert row["features"] == [1, 2]
    assert [m["feature"] for m in row["matched"]] == [1, 2]
    assert row["matched"][0]["token"] == "alpha beta" and row["snippet"] == "«alpha beta»"


def test_not_feature_excludes_and_where_filters(planted):
    got = search(planted, "c", features=["1:2", 2], not_features=[3])
    assert got["doc_id"].to_list() == ["c0", "c1"]  # c3 and c2 fire feature 3
    got = search(planted, "c", features=["1:2", 2], where="grp = 'b'")
    assert got["doc_id"].to_list() == ["c3", "c2"]
    assert search(planted, "c", features=[1], top=1)["doc_id"].to_list() == ["c3"]


def test_hostile_where_and_bad_features(planted):
    with pytest.raises(FilterError):
        search(planted, "c", features=[1], where="grp = 'a'; DROP TABLE activations; --")
    with pytest.raises(FilterError, match="unknown column"):
        search(planted, "c", features=[1], where="grp = 'a' or text like '%'")
    # a quote inside a value stays a value: nothing matches, nothing is dropped
    got = search(planted, "c", features=[1], where="grp = 'a''; DROP TABLE activations; --'")
    assert got.is_empty() and got.columns[:3] == ["rank", "doc_id", "score"]
    assert planted.query("SELECT count(*) AS n FROM activations")["n"][0] == 8
    with pytest.raises(UnknownFeatureError):
        search(planted, "c", features=[99])
    with pytest.raises(UnknownFeatureError):
        search(planted, "c", features=[1], not_features=[-1])
    with pytest.raises(InputError, match="nothing to search"):
        search(planted, "c")
    with pytest.raises(InputError, match="weight"):
        parse_feature_weights(["12:x"])


def test_empty_result_is_an_empty_frame(planted):
    got = search(planted, "c", features=[7])  # never fires
    assert got.is_empty() and "features" in got.columns


def test_query_search_and_hybrid(store):
    sae = register_sae(store, 16)
    texts = ["Bake the bread at 200 degrees.", "Knead the dough and let it rise.", "The striker scored a goal.",
             "The referee showed a red card.", "Stocks fell sharply on Monday."]
    write_corpus(store, sae, "mix", [[5], [5], [7], [7], [9]], texts=texts)
    store.con.execute("INSERT INTO feature_labels (sae_key, feature, label, source) VALUES "
                      "(?, 5, 'baking bread and pastry', 't'), (?, 7, 'football matches', 't'), "
                      "(?, 9, 'stock market and finance', 't')", [sae.sae_key] * 3)
    got = search(store, "mix", "football", top=2, n_features=1, match="describe")
    assert set(got["doc_id"]) == {"mix2", "mix3"} and got["features"].to_list() == [[7], [7]]
    dense = search(store, "mix", "baking bread", top=2, mode="dense")
    assert set(dense["doc_id"]) == {"mix0", "mix1"} and dense["features"].to_list() == [[], []]
    hyb = search(store, "mix", "baking bread", top=5, mode="hybrid", n_features=1, match="describe")
    assert set(hyb["doc_id"][:2]) == {"mix0", "mix1"}
    assert hyb["sae_score"][0] > 0 and hyb["score"].is_sorted(descending=True)
    # dense search honours --where through the FAISS id selector
    only = search(store, "mix", "baking bread", top=5, mode="dense", doc_idx=[2, 3, 4])
    assert set(only["doc_id"]) == {"mix2", "mix3", "mix4"}


def test_highlight_marks_every_span_in_view():
    text = "On 3 May 2020 we met; on 4 May we left."
    assert highlight(text, [(3, 8), (9, 13), (25, 30)]) == "On «3 May» «2020» we met; on «4 May» we left."
    assert highlight(text, [(3, 9), (5, 13)]) == "On «3 May 2020» we met; on 4 May we left."
    long = "x" * 200 + " date " + "y" * 200
    out = highlight(long, [(201, 205)], width=10)
    assert out.startswith("…") and out.endswith("…") and "«date»" in out


def test_similar(planted):
    got = similar(planted, "c", "c0")
    # c0 = (f1 2, f2 1); cosines: c1 2/sqrt5 = .894, c3 8/(sqrt5*sqrt41) = .559, c2 1.5/(sqrt5*sqrt3.25) = .372
    assert got["doc_id"].to_list() == ["c1", "c3", "c2"]
    assert np.allclose(got["score"].to_numpy(), [2 / 5**0.5, 8 / (5**0.5 * 41**0.5), 1.5 / (5**0.5 * 3.25**0.5)])
    assert got["features"][0].to_list() == [1]
    assert similar(planted, "c", "c0", features=[2])["doc_id"].to_list() == ["c2"]
    assert similar(planted, "c", "c0", where="grp = 'b'")["doc_id"].to_list() == ["c3", "c2"]
    with pytest.raises(InputError, match="no document"):
        similar(planted, "c", "nope")
