"""The literal-word ranking fused into hybrid search: stems, idf scores by hand, shorter first, fusion."""

import math

import numpy as np
import pytest

from saeembed.analysis import retrieve
from saeembed.analysis.search_words import stems, word_ranking
from tests.synthetic import register_sae, write_corpus

TEXTS = [
    "The old parameter is deprecated; use size instead.",          # 0: both stems
    "Deprecation warning for this function.",                      # 1: 'depre' only (Deprecation)
    "A parameter that sets the size.",                             # 2: 'param' only
    "Parameters: x, y. This long text describes how the parameters are used, at length, twice over.",  # 3
    "Nothing to see here.",                                        # 4
    "Undeprecated code is not a match: the stem must start a word.",  # 5
]


def test_stems_are_content_word_prefixes():
    assert stems("mentions a deprecated parameter") == ["depre", "param"]
    assert stems("the and of") == [] and stems("") == []


def test_word_ranking_scores_by_idf_and_prefers_shorter(store):
    sae = register_sae(store, 16)
    write_corpus(store, sae, "w", [{1: 1.0}] * len(TEXTS), texts=TEXTS)
    info = store.corpus("w")
    doc, score = word_ranking(store, info.corpus_id, "mentions a deprecated parameter", None, len(TEXTS), 10)
    idf_dep = math.log(7 / 2.5)  # 'depre' in docs 0 and 1 (not 5: mid-word)
    idf_par = math.log(7 / 3.5)  # 'param' in docs 0, 2, 3
    assert doc.tolist() == [0, 1, 2, 3]  # 2 before 3: same score, shorter text
    assert np.allclose(score, [idf_dep + idf_par, idf_dep, idf_par, idf_par])
    # a subset of documents: only those are ranked
    doc, _ = word_ranking(store, info.corpus_id, "deprecated parameter", np.array([1, 3, 4]), 3, 10)
    assert doc.tolist() == [1, 3]


def test_hybrid_lifts_the_document_that_says_the_word(store, monkeypatch):
    """SAE and dense rankings (planted) both put doc 0 last; it alone says both query words."""
    sae = register_sae(store, 16)
    write_corpus(store, sae, "w", [{1: 1.0 + i} for i in range(len(TEXTS))], texts=TEXTS)
    order = np.array([5, 4, 3, 2, 1, 0])
    monkeypatch.setattr(retrieve, "_dense_scores", lambda store, t, query, depth, model=None, progress=None:
                        (order[:depth], np.linspace(0.9, 0.1, len(order))[:depth]))
    plan = retrieve.plan_query(store, retrieve.target(store, "w"), features=[1])
    q = "mentions a deprecated parameter"
    without = retrieve.search(store, "w", q, plan=plan, mode="hybrid", top=6, word_weight=0.0, length_control="off")
    with_words = retrieve.search(store, "w", q, plan=plan, mode="hybrid", top=6, length_control="off")
    assert without["doc_idx"].to_list().index(0) > with_words["doc_idx"].to_list().index(0)
    row = with_words.filter(with_words["doc_idx"] == 0).row(0, named=True)
    assert row["word_score"] == pytest.approx(math.log(7 / 2.5) + math.log(7 / 3.5))
    assert np.isnan(with_words.filter(with_words["doc_idx"] == 4)["word_score"][0])  # no query word in it
