"""Offline labelling on planted token features: sampling, contrastive terms, metadata, the embedding scorer."""

import json

import polars as pl

import pytest

from saeembed.interp.examples import ExampleSampler, SampleConfig, window
from saeembed.interp.labels import LabelConfig, label_features, live_features, resolve_scope, search_labels
from saeembed.interp.scoring import EmbeddingScorer, auroc
from tests.interp.planted import bag_of_words_embed, planted_store


def test_window_cuts_at_words_and_keeps_the_span():
    text = "alpha beta gamma delta epsilon zeta eta theta"
    s = text.index("delta")
    win, hl = window(text, s + 1, s + 3, 12)  # a sub-word token grows to its word
    assert win[hl[0]:hl[1]] == "delta" and win == "beta gamma delta epsilon"
    assert window("a\nb", None, None, 5) == ("a b", None)


def test_auroc():
    assert auroc([3, 4], [1, 2]) == 1.0 and auroc([1], [2]) == 0.0 and auroc([1, 2], [1, 2]) == 0.5
    assert auroc([], [1]) is None


def test_sampler_sets_are_disjoint_and_negatives_do_not_fire(store):
    sae = planted_store(store)
    cfg = SampleConfig(n_top=5, n_quantile=5, n_score=10, n_random=5, n_hard=5)
    ex = ExampleSampler(store, sae, [1], cfg).sample([3, 5, 7])
    fe = ex[3]
    assert fe.n_active == 40 and len(fe.explain) == 10 and len(fe.score) == 10
    fe.check_disjoint()
    values = store.query("SELECT doc_idx, value FROM activations WHERE feature = 3 ORDER BY value DESC")
    assert [e.doc_idx for e in fe.explain[:5]] == values["doc_idx"].head(5).to_list()  # the top 5 explain
    firing = set(values["doc_idx"].to_list())
    assert all(e.doc_idx not in firing for e in fe.explain_negatives + fe.score_negatives)
    assert all(e.span_text in ("covid", "pandemic") for e in fe.explain + fe.score)
    assert {e.kind for e in fe.score_negatives} == {"hard", "random"}
    assert ex[7].n_active == 0 and not ex[7].explain


def test_offline_labels_name_the_planted_words(store):
    planted_store(store)
    run = label_features(store, [3, 5, 7], config=LabelConfig(), scorer=EmbeddingScorer(bag_of_words_embed))
    rows = {r["feature"]: r for r in run.frame.to_dicts()}
    assert rows[3]["label"].startswith(('"pandemic" and "covid"', '"covid" and "pandemic"'))
    assert "topic=health 100% vs 25%" in rows[3]["label"]  # the run shows what it over-represents in its corpus
    assert rows[5]["label"].startswith("years (") and "topic=" not in rows[5]["label"]  # a kind, not one year
    assert rows[7]["status"] == "never fires" and rows[7]["label"] is None
    assert rows[3]["score"] > 0.9  # the bag-of-words scorer sees the planted words in held-out windows
    stored = store.labels(1, [3, 5, 7])
    assert sorted(stored["feature"].to_list()) == [3, 5] and set(stored["label_source"]) == {"offline"}
    # the metadata is a fact about the labelled corpus: shown for it, never for another or store-wide
    assert "topic=" not in stored.filter(pl.col("feature") == 3)["label"][0]
    here = store.labels(1, [3], corpus="planted")["label"][0]
    assert here.endswith("(topic=health 100% vs 25%)") and here.startswith(stored.filter(pl.col("feature") == 3)["label"][0])
    assert "topic=" not in store.labels(1, [3], corpus="elsewhere")["label"][0]
    details = json.loads(store.query("SELECT details FROM feature_labels WHERE feature = 3")["details"][0])
    explain = {tuple(k) for k in details["explain_examples"] + details["explain_negatives"]}
    score = {tuple(k) for k in details["score_examples"] + details["score_negatives"]}
    assert explain and score and not explain & score


def test_embedding_scorer_ranks_right_label_above_wrong(store):
    """The real sentence model: a label naming the planted words beats an unrelated one."""
    sae = planted_store(store)
    fe = ExampleSampler(store, sae, [1], SampleConfig(n_score=20, n_random=20)).sample([3])[3]
    scorer = EmbeddingScorer()
    neg = [e for e in fe.score_negatives if e.kind == "random"]
    right = scorer.score("covid, pandemic", fe.score, neg)
    wrong = scorer.score("baking bread", fe.score, neg)
    assert right > 0.8 and right > wrong + 0.2


def test_search_labels_by_text(store):
    planted_store(store)
    label_features(store, [3, 5], scorer=EmbeddingScorer(bag_of_words_embed))
    found = search_labels(store, "COVID", semantic=False)
    assert found["feature"].to_list() == [3] and found["match"][0] == "text"
    assert search_labels(store, "zzz-nothing", semantic=False).is_empty()


def test_live_features_and_unknown_feature(store):
    from saeembed.errors import UnknownFeatureError

    planted_store(store)
    s, cids = resolve_scope(store)
    live = live_features(store, s, cids)
    assert live[0] == 0 and 7 not in live and set(live) >= {3, 5}
    with pytest.raises(UnknownFeatureError):
        label_features(store, [99], scorer=EmbeddingScorer(bag_of_words_embed))
