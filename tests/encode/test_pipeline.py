
import polars as pl
import pytest

from saeembed.encode.pipeline import EncodeConfig, encode_corpus
from saeembed.errors import ModelError, SAEError, StoreError, UnknownCorpusError
from saeembed.documents import Documents
from saeembed.store import Store
from tests.conftest import CORPUS_WORDS, make_sae


def _corpus(n=40, seed=0):
    import random

    rng = random.Random(seed)
    texts = [" ".join(rng.choices(CORPUS_WORDS, k=rng.randint(3, 40))) for _ in range(n)]
    frame = pl.DataFrame({"doc_id": [f"t{i}" for i in range(n)], "text": texts, "src": ["a", "b"] * (n // 2)})
    return Documents(frame, "text", "id", ["src"], "mem", 0)


def _rows(store, corpus="c"):
    return store.activations(corpus).sort("doc_id", "feature")


class Boom(Exception):
    pass


def test_interrupted_encode_resumes_to_identical_rows(tmp_path, tiny_bert_dir):
    sae = make_sae(32, 64, architecture="topk", k=6, hook="layers.1")
    cfg = EncodeConfig(chunk_docs=8, batch_size=4, device="cpu")
    with Store(tmp_path / "full.duckdb") as full:
        full.add_corpus("c", _corpus())
        r = encode_corpus(full, "c", model=str(tiny_bert_dir), sae=sae, config=cfg)
        assert r.docs_encoded == 40 and r.activation_rows > 40 * 3
        expected = _rows(full)
        expected_ex = full.query("SELECT * EXCLUDE (corpus_id, sae_key) FROM exemplars ORDER BY feature, rank")

    path = tmp_path / "crash.duckdb"
    with Store(path) as st:
        st.add_corpus("c", _corpus())

        def crash_after_two_chunks(docs, tokens, total):
            if docs >= 16:
                raise Boom

        with pytest.raises(Boom):
            encode_corpus(st, "c", model=str(tiny_bert_dir), sae=sae, config=cfg, progress=crash_after_two_chunks)
    with Store(path) as st:  # reopen, as after a crash
        assert st.query("SELECT count(*) AS n FROM encoded_docs")["n"][0] == 16
        r = encode_corpus(st, "c", model=str(tiny_bert_dir), sae=sae, config=cfg)
        assert (r.docs_already, r.docs_encoded) == (16, 24)
        got = _rows(st)
        assert got.equals(expected)  # exactly the same rows and values, no duplicates, none missing
        assert st.query("SELECT * EXCLUDE (corpus_id, sae_key) FROM exemplars ORDER BY feature, rank").equals(expected_ex)
        again = encode_corpus(st, "c", model=str(tiny_bert_dir), sae=sae, config=cfg)
        assert again.docs_encoded == 0 and _rows(st).equals(expected)


def test_appended_documents_are_encoded_on_rerun(store, tiny_bert_dir):
    sae = make_sae(32, 64, hook="layers.1")
    store.add_corpus("c", _corpus(10))
    encode_corpus(store, "c", model=str(tiny_bert_dir), sae=sae)
    more = _corpus(14, seed=0)
    store.add_corpus("c", more, mode="append")  # the first 10 ids and texts are the same
    r = encode_corpus(store, "c", model=str(tiny_bert_dir), sae=sae)
    assert (r.docs_already, r.docs_encoded) == (10, 4)
    assert store.activations("c")["doc_id"].n_unique() == 14


def test_width_mismatch_fails_before_any_work(store, tiny_bert_dir):
    store.add_corpus("c", _corpus(4))
    with pytest.raises(SAEError, match="SAE width 48 does not match.*hidden size 32"):
        encode_corpus(store, "c", model=str(tiny_bert_dir), sae=make_sae(48, 64, hook="layers.1"))
    assert store.info()["encodings"] == 0 and store.info()["saes"] == 0


def test_bad_hook_and_corpus_are_clear(store, tiny_bert_dir):
    store.add_corpus("c", _corpus(4))
    sae = make_sae(32, 64, hook=None)
    with pytest.raises(SAEError, match="pass --hook"):
        encode_corpus(store, "c", model=str(tiny_bert_dir), sae=sae)
    with pytest.raises(ModelError, match="valid hooks are"):
        encode_corpus(store, "c", model=str(tiny_bert_dir), sae=sae, hook="layers.9")
    with pytest.raises(UnknownCorpusError, match="known corpora: c"):
        encode_corpus(store, "nope", model=str(tiny_bert_dir), sae=sae, hook="layers.1")
    assert store.info()["activation_rows"] == 0


def test_resume_with_other_pooling_is_refused(store, tiny_bert_dir):
    sae = make_sae(32, 64, hook="layers.1")
    store.add_corpus("c", _corpus(6))
    encode_corpus(store, "c", model=str(tiny_bert_dir), sae=sae)
    rows = store.info()["activation_rows"]
    with pytest.raises(StoreError, match="exclude_special"):
        encode_corpus(store, "c", model=str(tiny_bert_dir), sae=sae, config=EncodeConfig(exclude_special=False))
    assert store.info()["activation_rows"] == rows
    r = encode_corpus(store, "c", model=str(tiny_bert_dir), sae=sae,
                      config=EncodeConfig(exclude_special=False, replace=True))
    assert r.docs_encoded == 6 and r.docs_already == 0


def test_decoder_model_with_bos_and_exemplars(store, tiny_gpt2_dir):
    sae = make_sae(32, 64, architecture="jumprelu", hook="layers.2")
    store.add_corpus("c", _corpus(12))
    r = encode_corpus(store, "c", model=str(tiny_gpt2_dir), sae=sae)
    assert r.docs_encoded == 12
    n_tokens = store.query("SELECT sum(n_tokens) AS n FROM encoded_docs")["n"][0]
    texts = store.documents("c")["text"].to_list()
    assert n_tokens == sum(len(store_tok) for store_tok in _tokens(tiny_gpt2_dir, texts))  # BOS not counted
    ex = store.query("SELECT feature, rank, value FROM exemplars ORDER BY feature, rank")
    assert ex.height > 0
    # exemplars are each feature's strongest documents, in order
    for _, g in ex.group_by("feature"):
        assert g.sort("rank")["value"].is_sorted(descending=True)
    summary = store.feature_summary("c", top=5)
    assert summary.height == 5 and summary["docs"].is_sorted(descending=True)
    assert all("«" in s for s in summary["top_exemplar"])


def _tokens(path, texts):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    return [tok(t, add_special_tokens=False)["input_ids"] for t in texts]


def test_export_formats_round_trip(store, tiny_bert_dir, tmp_path):
    sae = make_sae(32, 64, hook="layers.1")
    store.add_corpus("c", _corpus(8))
    encode_corpus(store, "c", model=str(tiny_bert_dir), sae=sae)
    expected = store.activations("c")
    for name in ("e.parquet", "e.csv", "e.jsonl"):
        n = store.export("c", tmp_path / name)
        assert n == expected.height
        got = {"parquet": pl.read_parquet, "csv": pl.read_csv, "jsonl": pl.read_ndjson}[name.split(".")[1]](tmp_path / name)
        assert got.columns == ["doc_id", "feature", "value", "active_tokens"]
        assert got["doc_id"].to_list() == expected["doc_id"].to_list()
        assert got["feature"].to_list() == expected["feature"].to_list()
    with pytest.raises(Exception, match="use a .parquet, .csv or .jsonl"):
        store.export("c", tmp_path / "e.xlsx")
