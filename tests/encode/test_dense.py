import numpy as np
import polars as pl

from saeembed.documents import Documents
from saeembed.encode.dense import DenseEmbedder, corpus_embeddings


def test_dense_embeddings_are_mean_pooled_unit_vectors_and_cached(store, tiny_bert_dir):
    import torch

    texts = ["hello world", "the quick brown fox jumps over the lazy dog", "refund my order please"]
    frame = pl.DataFrame({"doc_id": ["a", "b", "c"], "text": texts})
    store.add_corpus("c", Documents(frame, "text", "id", [], "mem", 0))
    emb = corpus_embeddings(store, "c", model=str(tiny_bert_dir), device="cpu")
    assert emb.shape == (3, 32)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    # independent recomputation of one row: mean over real tokens of the last hidden state
    e = DenseEmbedder(str(tiny_bert_dir), device="cpu")
    enc = e.loaded.tokenizer([texts[1]], return_tensors="pt")
    with torch.no_grad():
        h = e.loaded.model(**enc).last_hidden_state[0].mean(0)
    assert np.allclose(emb[1], (h / h.norm()).numpy(), atol=1e-5)
    n_rows = store.query("SELECT count(*) AS n FROM dense_embeddings")["n"][0]
    again = corpus_embeddings(store, "c", model=str(tiny_bert_dir), device="cpu")
    assert np.array_equal(again, emb)
    assert store.query("SELECT count(*) AS n FROM dense_embeddings")["n"][0] == n_rows == 3


def test_doc_embeddings_embed_and_cache_only_the_documents_asked_for(store, tiny_bert_dir):
    from saeembed.encode.dense import doc_embeddings

    texts = ["hello world", "the quick brown fox", "refund my order please", "a fourth one", "and a fifth"]
    store.add_corpus("c", Documents(pl.DataFrame({"doc_id": list("abcde"), "text": texts}), "text", "id", [], "mem", 0))
    part = doc_embeddings(store, "c", [3, 0], model=str(tiny_bert_dir), device="cpu")
    assert sorted(store.query("SELECT doc_idx FROM dense_embeddings")["doc_idx"].to_list()) == [0, 3]
    info = store.corpus("c")
    e = DenseEmbedder(str(tiny_bert_dir), device="cpu")
    cached = store.dense_embeddings(info, e.name, dim=e.dim, doc_idx=[4, 3, 0])
    assert not cached[0].any()  # never embedded: zeros
    assert np.array_equal(cached[1:], part)
    every = doc_embeddings(store, "c", None, model=str(tiny_bert_dir), device="cpu")  # embeds only 1, 2, 4
    assert np.array_equal(every[[3, 0]], part)
    assert np.allclose(every, e.embed(texts), atol=1e-5)
