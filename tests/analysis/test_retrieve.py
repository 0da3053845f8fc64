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
        search(planted, "c", features=[1], where="grp = 'a' or nosuch like '%'")
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
    got = search(store, "mix", "football", top=2, n_features=1, match="describe", mode="sae")
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


def _length_corpus(store):
    """Feature 1 fires on every long document anyway (values 1.2..1.6) and on 5 short relevant ones (1.0);
    60 short documents fire nothing. Lengths: short 10 tokens, long 2,000."""
    sae = register_sae(store, 16)
    long_vals = np.linspace(1.2, 1.6, 60)
    docs = [{1: 1.0}] * 5 + [{1: float(v)} for v in long_vals] + [{2: 1.0}] * 60
    n_tokens = [10] * 5 + [2000] * 60 + [10] * 60
    write_corpus(store, sae, "len", docs, n_tokens=n_tokens, ids=[f"rel{i}" for i in range(5)]
                 + [f"long{i}" for i in range(60)] + [f"short{i}" for i in range(60)])
    return long_vals


def test_length_control_stops_long_documents_winning(store):
    long_vals = _length_corpus(store)
    raw = search(store, "len", features=[1], top=5, length_control="off")
    assert all(d.startswith("long") for d in raw["doc_id"])  # the raw score ranks by length
    got = search(store, "len", features=[1], top=70)
    assert got["doc_id"].to_list()[:5] == [f"rel{i}" for i in range(5)]
    # residual = raw - strength * mean raw score of documents of the same length (0 where nothing fires)
    short_mean, long_mean, scale = 5 * 1.0 / 65, long_vals.mean(), long_vals.max()
    for strength, frame in [(0.5, got), (1.0, search(store, "len", features=[1], top=70, length_strength=1.0))]:
        assert np.allclose(frame["score"][:5].to_numpy(), (1.0 - strength * short_mean) / scale)
        top_long = frame.filter(pl.col("doc_id") == "long59")
        assert np.isclose(top_long["score"][0], (long_vals.max() - strength * long_mean) / scale)
        assert np.isclose(top_long["raw_score"][0], 1.0)
    z = search(store, "len", features=[1], top=5, length_control="zscore")
    assert z["doc_id"].to_list() == [f"rel{i}" for i in range(5)]
    with pytest.raises(InputError, match="length control"):
        search(store, "len", features=[1], length_control="sometimes")


def test_length_control_leaves_equal_lengths_alone(planted):
    on = search(planted, "c", features=["1:2", 2], top=10)
    off = search(planted, "c", features=["1:2", 2], top=10, length_control="off")
    assert on["doc_id"].to_list() == off["doc_id"].to_list()
    assert np.allclose(on["score"].to_numpy(), off["score"].to_numpy())


def test_expected_by_length_matches_binned_means():
    from saeembed.analysis.search_length import expected_by_length

    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 5000, 3000)
    scores = 0.3 * np.log1p(lengths) + rng.normal(0, 0.1, 3000)
    mean, spread = expected_by_length(lengths, scores)
    # the fitted curve follows the planted slope; the residual carries no length trend any more
    resid = scores - mean
    assert abs(np.polyfit(np.log1p(lengths), resid, 1)[0]) < 0.02
    assert abs(np.polyfit(np.log1p(lengths), mean, 1)[0] - 0.3) < 0.03
    assert np.allclose(np.median(spread), 0.1, atol=0.03)
    assert expected_by_length(np.full(50, 7), scores[:50]) is None


def _ap(ranked, relevant):
    hits, total = 0, 0.0
    for k, d in enumerate(ranked, 1):
        if d in relevant:
            hits += 1
            total += hits / k
    return total / len(relevant)


def test_hybrid_beats_both_when_they_find_different_halves(store, monkeypatch):
    """Relevant: docs 0-5. SAE feature 1 ranks 0,1,2 first, then 6,7,8 (irrelevant), then 3,4,5; the dense
    ranking (planted) puts 3,4,5 first, then 9,10,11, then 0,1,2. Fusion lifts all six to the top."""
    from saeembed.analysis import retrieve

    sae = register_sae(store, 16)
    values = {0: 3.0, 1: 2.9, 2: 2.8, 6: 2.0, 7: 1.9, 8: 1.8, 3: 1.0, 4: 0.9, 5: 0.8}
    write_corpus(store, sae, "h", [{1: values[i]} if i in values else {2: 1.0} for i in range(14)])
    dense_order = np.array([3, 4, 5, 9, 10, 11, 0, 1, 2, 12, 13, 6, 7, 8])
    monkeypatch.setattr(retrieve, "_dense_scores", lambda store, t, query, depth, model=None, progress=None:
                        (dense_order[:depth], np.linspace(0.9, 0.1, len(dense_order))[:depth]))
    relevant = set(range(6))
    plan = retrieve.plan_query(store, retrieve.target(store, "h"), features=[1])  # the query text only feeds dense
    ranked = {m: search(store, "h", "x", plan=plan, mode=m, top=14)["doc_idx"].to_list()
              for m in ("sae", "dense", "hybrid")}
    ap = {m: _ap(r, relevant) for m, r in ranked.items()}
    assert ap["sae"] == pytest.approx((3 + 4 / 7 + 5 / 8 + 6 / 9) / 6) == ap["dense"]
    # default weights (sae 2, dense 1): doc 6 (sae rank 4, dense 12) slips in before doc 5, nothing else
    assert ranked["hybrid"][:7] == [0, 1, 3, 2, 4, 6, 5] and ap["hybrid"] == pytest.approx((5 + 6 / 7) / 6)
    equal = search(store, "h", "x", plan=plan, mode="hybrid", top=14, sae_weight=1.0)["doc_idx"].to_list()
    assert sorted(equal[:6]) == list(range(6)) and _ap(equal, relevant) == pytest.approx(1.0)
    # a query text searches hybrid by default; features alone search by SAE
    assert search(store, "h", "x", plan=plan, top=14)["doc_idx"].to_list() == ranked["hybrid"]
    assert search(store, "h", features=[1], top=14)["doc_idx"].to_list() == ranked["sae"]
