import numpy as np
import pytest

from saeembed.analysis.selection import embedding_matrix, require_docs, select
from saeembed.errors import FilterError, InputError, UnknownFeatureError
from tests.synthetic import register_sae, write_corpus


def test_select_filters_on_metadata_and_token_counts(store):
    sae = register_sae(store)
    write_corpus(store, sae, "c", [[1, 2], {3: 2.5}, [], [1]], meta={"src": ["a", "b", "a", "b"]},
                 n_tokens=[5, 50, 7, 9])
    assert select(store, "c").doc_idx.tolist() == [0, 1, 2, 3]
    assert select(store, "c", where="src = 'a'").doc_idx.tolist() == [0, 2]
    assert select(store, "c", where="n_tokens > 8 and doc_id != 'c3'").doc_idx.tolist() == [1]
    with pytest.raises(FilterError, match="unknown column"):
        select(store, "c", where="nope = 'x'")
    with pytest.raises(InputError, match="no encoded documents"):
        require_docs(select(store, "c", where="src = 'zzz'"))
    assert {"doc_id", "n_chars", "n_tokens", "src"} <= set(store.doc_table("c", sae).columns)


def test_embedding_matrix_rows_follow_the_selection(store):
    sae = register_sae(store)
    write_corpus(store, sae, "c", [[1, 2], {3: 2.5}, [], [1]], meta={"src": ["a", "b", "a", "b"]})
    m = embedding_matrix(store, select(store, "c", where="src = 'b'"))
    assert m.shape == (2, 16)
    assert m.toarray()[0, 3] == 2.5 and m.toarray()[1, 1] == 1.0 and m.nnz == 2
    b = embedding_matrix(store, select(store, "c"), binary=True, features=[1, 3])
    assert b.toarray()[:, [1, 3]].tolist() == [[1, 0], [0, 1], [0, 0], [1, 0]]
    assert np.all(b.toarray()[:, 2] == 0)  # feature 2 was not asked for
    assert sae.check_features([0, 15]) == [0, 15]

    # a small part of a large corpus is read alone (doc filter pushed into the store), same rows either way
    rng = np.random.default_rng(0)
    docs = [{int(f): float(rng.uniform(0.1, 3)) for f in rng.choice(16, 4, replace=False)} for _ in range(200)]
    write_corpus(store, sae, "big", docs, meta={"src": [f"s{i % 10}" for i in range(200)]})
    dense = np.zeros((200, 16), np.float32)
    for i, d in enumerate(docs):
        for f, v in d.items():
            dense[i, f] = v
    for where in ("src = 's3'", "src != 's3'"):  # 20 of 200 documents, then 180 (read whole, then filtered)
        sel = select(store, "big", where=where)
        assert np.allclose(embedding_matrix(store, sel).toarray(), dense[sel.doc_idx])
    from saeembed.analysis.selection import Selection

    shuffled = Selection(sel.corpus, sel.sae, np.array([150, 3, 77]), "some")  # any order, rows follow it
    assert np.allclose(embedding_matrix(store, shuffled, features=[2, 5]).toarray()[:, [2, 5]], dense[[150, 3, 77]][:, [2, 5]])
    with pytest.raises(UnknownFeatureError, match="0..15"):
        sae.check_features([16])
