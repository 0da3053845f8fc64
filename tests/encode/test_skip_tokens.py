"""encode --skip-tokens function: a document's max-pool leaves out whole-word stop words and symbol-only
tokens (never pieces of a longer word; a document with nothing else keeps every token), checked against
a plain-torch forward pass; token rows keep every token and say which were pooled; an SAE can recommend it."""

import json

import numpy as np
import polars as pl
import pytest
import torch

from saeembed.analysis.pooling import pooled_rows
from saeembed.documents import Documents
from saeembed.encode.doc_tokens import DocTokens
from saeembed.encode.pipeline import EncodeConfig, encode_corpus
from saeembed.encode.token_kinds import STOP_WORDS, function_tokens, pooled_masks, recommended_skip
from saeembed.errors import InputError, StoreError
from saeembed.sae.formats import load_sae, save_sae
from saeembed.store import Store
from tests.conftest import make_sae

TEXTS = ["the cat , of it",  # only "cat" is content
         "the of it .",  # nothing but function tokens: falls back to every token
         "theory catdog of",  # "the" starts a longer word (the ##o ##r ##y): kept, as are all the pieces
         "The refund was late ! please help"]
POOLED = [{"cat"}, {"the", "of", "it", "."}, {"the", "o", "r", "y", "cat", "d", "g"}, {"refund", "late", "help"}]


def _reference(model_dir, sae, text: str, pooled_words: set[str] | None):
    """{feature: (max value, tokens where it fires)} over the content tokens whose text is in pooled_words
    (None: every content token), from a plain forward pass and the SAE's dense encode."""
    from transformers import AutoTokenizer, BertModel

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = BertModel.from_pretrained(model_dir).eval()
    enc = tok(text, return_tensors="pt", return_special_tokens_mask=True, return_offsets_mapping=True)
    with torch.no_grad():
        hidden = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                       output_hidden_states=True).hidden_states[2][0]  # layers.1 = output of block 1
        offsets = enc["offset_mapping"][0].tolist()
        content = [m == 0 and e > s for m, (s, e) in zip(enc["special_tokens_mask"][0].tolist(), offsets)]
        chosen = [c and (pooled_words is None or text[s:e].lower() in pooled_words)
                  for c, (s, e) in zip(content, offsets)]
        z = sae.encode(hidden[torch.tensor(chosen)])
    return {f: (float(z[:, f].max()), int((z[:, f] > 0).sum())) for f in torch.nonzero(z.max(0).values > 0).flatten().tolist()}


def _corpus(st, texts=TEXTS):
    st.add_corpus("c", Documents(pl.DataFrame({"doc_id": [f"d{i}" for i in range(len(texts))], "text": texts}),
                                 "text", "id", [], "mem", 0))


def _encode(path, model_dir, sae, **cfg):
    with Store(path) as st:
        _corpus(st)
        result = encode_corpus(st, "c", model=str(model_dir), sae=sae, config=EncodeConfig(device="cpu", **cfg))
        rows = st.query("SELECT doc_idx, feature, value, active_tokens, span_start, span_end FROM activations "
                        "ORDER BY doc_idx, feature")
        params = st.encoding(st.corpus("c"), st.encoded_sae("c"))["params"]
    return result, rows, params


@pytest.fixture(scope="module")
def sae(tmp_path_factory):
    base = tmp_path_factory.mktemp("skip_sae")
    return load_sae(save_sae(make_sae(32, 64, k=8, hook="layers.1"), base / "sae"))


def _check_against_reference(rows, model_dir, sae, pooled):
    for d, text in enumerate(TEXTS):
        expect = _reference(model_dir, sae, text, pooled[d] if pooled else None)
        got = rows.filter(pl.col("doc_idx") == d)
        assert sorted(got["feature"].to_list()) == sorted(expect)
        for f, v, n, s, e in got.select("feature", "value", "active_tokens", "span_start", "span_end").iter_rows():
            assert v == pytest.approx(expect[f][0], rel=1e-4, abs=1e-5) and n == expect[f][1]
            if pooled:
                assert text[s:e].lower() in pooled[d]  # the strongest token is a pooled one


def test_function_tokens_are_judged_by_their_characters():
    text = "The cat, of it's theory; I  -- 42"
    spans = {"The": (0, 3), "cat": (4, 7), ",": (7, 8), "of": (9, 11), "it": (12, 14), "'": (14, 15), "s": (15, 16),
             "the": (17, 20), "ory": (20, 23), ";": (23, 24), " I": (24, 26), "  --": (26, 30), "42": (31, 33)}
    flags = dict(zip(spans, function_tokens(text, np.array(list(spans.values())))))
    assert flags == {"The": True, "cat": False, ",": True, "of": True, "it": True, "'": True, "s": False,
                     "the": False, "ory": False, ";": True, " I": True, "  --": True, "42": False}
    # GPT-style spans carry the space in front, SentencePiece pieces split words: same answers
    text = "so the cathedral"
    assert function_tokens(text, np.array([[0, 2], [2, 6], [6, 10], [10, 16]])).tolist() == [True, True, False, False]
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    assert STOP_WORDS == ENGLISH_STOP_WORDS  # the list the default-SAE benchmark measured with


def test_a_document_with_only_function_tokens_keeps_them_all(tiny_bert_dir):
    from transformers import AutoTokenizer

    from saeembed.encode.tokens import tokenize

    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    texts = ["the of it .", "the cat"]
    windows = tokenize(tok, texts, window=4)  # several windows per document
    keep = pooled_masks(texts, windows, "function")
    by_doc = {0: [], 1: []}
    for w in windows:
        by_doc[w.doc] += [texts[w.doc][s:e] for (s, e), k in zip(w.offsets.tolist(), keep[id(w)]) if k]
    assert by_doc == {0: ["the", "of", "it", "."], 1: ["cat"]}
    assert pooled_masks(texts, windows, "none") is None


def test_skipping_pools_only_content_tokens(tmp_path, tiny_bert_dir, sae):
    result, rows, params = _encode(tmp_path / "s.duckdb", tiny_bert_dir, sae, skip_tokens="function")
    assert params["skip_tokens"] == "function" and (result.skip_tokens, result.skip_tokens_from) == ("function", "option")
    assert result.tokens == 5 + 4 + 9 + 7  # n_tokens still counts every content token
    _check_against_reference(rows, tiny_bert_dir, sae, POOLED)
    first = rows.filter(pl.col("doc_idx") == 0)
    assert set(zip(first["span_start"], first["span_end"])) == {(4, 7)}  # "cat", nothing else


def test_default_pools_every_token_as_before(tmp_path, tiny_bert_dir, sae):
    result, rows, params = _encode(tmp_path / "d.duckdb", tiny_bert_dir, sae)
    assert "skip_tokens" not in params and result.skip_tokens == "none"  # old stores read the same
    _check_against_reference(rows, tiny_bert_dir, sae, None)
    _, explicit, params = _encode(tmp_path / "n.duckdb", tiny_bert_dir, sae, skip_tokens="none")
    assert explicit.equals(rows) and "skip_tokens" not in params


def test_token_rows_keep_every_token_and_repool_to_the_document_rows(tmp_path, tiny_bert_dir, sae):
    path = tmp_path / "k.duckdb"
    _, rows, _ = _encode(path, tiny_bert_dir, sae, skip_tokens="function", keep_tokens=True, window=6)
    with Store(path, read_only=True) as st:
        info = st.corpus("c")
        s = st.encoded_sae(info)
        tokens = st.token_rows(info, s)
        n_tokens = st.query("SELECT doc_idx, n_tokens FROM encoded_docs ORDER BY doc_idx")
        got = {p: pooled_rows(st, "c", p) for p in ("max", "sum", "mean")}
    count = tokens.group_by("doc_idx").agg(n=pl.col("token_index").n_unique()).sort("doc_idx")
    assert count["n"].to_list() == n_tokens["n_tokens"].to_list()  # every content token has rows
    words = {(d, t): TEXTS[d][a:b].lower() for d, t, a, b in tokens.select("doc_idx", "token_index", "start", "end").iter_rows()}
    for (d, t), word in words.items():
        flag = tokens.filter((pl.col("doc_idx") == d) & (pl.col("token_index") == t))["pooled"].unique().to_list()
        assert flag == [word in POOLED[d]], (d, word)
    pooled = tokens.filter("pooled").group_by("doc_idx", "feature").agg(
        mx=pl.col("value").max(), n=pl.len(), total=pl.col("value").cast(pl.Float64).sum()).sort("doc_idx", "feature")
    joined = rows.join(pooled, on=["doc_idx", "feature"], how="full", coalesce=True)
    assert joined.height == rows.height == pooled.height
    assert (joined["value"] == joined["mx"]).all() and (joined["active_tokens"] == joined["n"]).all()  # exactly
    assert got["max"]["value"].equals(rows["value"])
    n_pooled = {d: len(p) for d, p in enumerate(POOLED)}
    n_pooled[2] = 8  # "theory catdog": the ##o ##r ##y cat ##d ##o ##g (two ##o)
    for d, f, v in got["mean"].iter_rows():
        total = pooled.filter((pl.col("doc_idx") == d) & (pl.col("feature") == f))["total"].item()
        assert v == pytest.approx(total / n_pooled[d], rel=1e-5)
    assert got["sum"]["value"].to_numpy() == pytest.approx(pooled["total"].to_numpy(), rel=1e-5)


def test_the_sae_can_recommend_it_and_an_explicit_none_wins(tmp_path, tiny_bert_dir):
    raw = make_sae(32, 64, k=8, hook="layers.1")
    raw.cfg.extra["saeembed_pooling"] = {"skip_tokens": "function"}
    sae = load_sae(save_sae(raw, tmp_path / "sae"))
    assert recommended_skip(sae.cfg) == "function"
    result, rows, params = _encode(tmp_path / "r.duckdb", tiny_bert_dir, sae)
    assert params["skip_tokens"] == "function" and result.skip_tokens_from == "sae"
    _check_against_reference(rows, tiny_bert_dir, sae, POOLED)
    result, rows, params = _encode(tmp_path / "o.duckdb", tiny_bert_dir, sae, skip_tokens="none")
    assert "skip_tokens" not in params and result.skip_tokens_from == "option"
    _check_against_reference(rows, tiny_bert_dir, sae, None)


def test_a_resume_pools_as_its_stored_rows_whatever_the_sae_now_recommends(tmp_path, tiny_bert_dir):
    """A store encoded before the SAE recommended skipping (same weights, same SAE id) resumes and appends
    with every token pooled; asking for the other pooling is still refused."""
    raw = make_sae(32, 64, k=8, hook="layers.1")
    plain = load_sae(save_sae(raw, tmp_path / "plain"))
    raw.cfg.extra["saeembed_pooling"] = {"skip_tokens": "function"}
    recommends = load_sae(save_sae(raw, tmp_path / "recommends"))
    assert plain.identity == recommends.identity
    path = tmp_path / "s.duckdb"
    with Store(path) as st:
        _corpus(st, TEXTS[:2])
        encode_corpus(st, "c", model=str(tiny_bert_dir), sae=plain, config=EncodeConfig(device="cpu"))
        st.add_corpus("c", Documents(pl.DataFrame({"doc_id": [f"d{i}" for i in range(len(TEXTS))], "text": TEXTS}),
                                     "text", "id", [], "mem", 0), mode="append")
        result = encode_corpus(st, "c", model=str(tiny_bert_dir), sae=recommends, config=EncodeConfig(device="cpu"))
        assert (result.skip_tokens, result.skip_tokens_from) == ("none", "stored")
        assert "skip_tokens" not in st.encoding(st.corpus("c"), st.encoded_sae("c"))["params"]
        rows = st.query("SELECT doc_idx, feature, value, active_tokens, span_start, span_end FROM activations "
                        "ORDER BY doc_idx, feature")
        with pytest.raises(StoreError, match="skip_tokens"):
            encode_corpus(st, "c", model=str(tiny_bert_dir), sae=recommends,
                          config=EncodeConfig(device="cpu", skip_tokens="function"))
    _check_against_reference(rows, tiny_bert_dir, plain, None)  # every document, appended ones too: all tokens


def test_a_foreign_config_can_recommend_it_and_a_bad_value_is_refused(tmp_path, tiny_bert_dir, sae):
    from saeembed.sae.model import SAEConfig

    cfg = SAEConfig(32, 64, "topk", k=8, extra={"raw_cfg": {"saeembed_pooling": {"skip_tokens": "function"}}})
    assert recommended_skip(cfg) == "function" and recommended_skip(SAEConfig(32, 64)) is None
    with Store(tmp_path / "b.duckdb") as st:
        _corpus(st)
        with pytest.raises(InputError, match="--skip-tokens must be none or function"):
            encode_corpus(st, "c", model=str(tiny_bert_dir), sae=sae, config=EncodeConfig(skip_tokens="stop"))


def test_recomputed_tokens_mark_what_the_pool_took(tmp_path, tiny_bert_dir, sae):
    path = tmp_path / "t.duckdb"
    _, rows, _ = _encode(path, tiny_bert_dir, sae, skip_tokens="function")
    with Store(path, read_only=True) as st:
        setup = st.encoding_setup(st.corpus("c").corpus_id, 1)
    scorer = DocTokens(setup["model"], setup["sae_source"], setup["hook"], setup["params"])
    for d, f, value, n in rows.select("doc_idx", "feature", "value", "active_tokens").iter_rows():
        toks = scorer.feature_tokens(TEXTS[d], f)
        taken = [t for t in toks if t.pooled]
        assert len(taken) == n and max(t.value for t in taken) == pytest.approx(value, rel=1e-4)
        assert all(t.pooled == (TEXTS[d][t.start:t.end].lower() in POOLED[d]) for t in toks)
    highlighted = {TEXTS[0][t.start:t.end] for f in range(64) for t in scorer.feature_tokens(TEXTS[0], f)}
    assert highlighted == {"the", "cat", ",", "of", "it"}  # every token is still shown


def test_encode_command_line(tmp_path, tiny_bert_dir, capsys, monkeypatch):
    from tests.test_cli import run

    raw = make_sae(32, 64, k=8, hook="layers.1")
    raw.cfg.extra["saeembed_pooling"] = {"skip_tokens": "function"}
    sae = save_sae(raw, tmp_path / "sae")
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(json.dumps({"id": f"d{i}", "text": t}) for i, t in enumerate(TEXTS)) + "\n")
    store = tmp_path / "cli.duckdb"
    assert run(capsys, monkeypatch, "ingest", data, "--corpus", "c", "--id-column", "id", "--store", store)[0] == 0
    base = ("encode", "c", "--sae", sae, "--model", tiny_bert_dir, "--store", store, "--device", "cpu")
    code, out, err = run(capsys, monkeypatch, *base, "--skip-tokens", "stop")
    assert code != 0 and "--skip-tokens must be none or function" in err and len(err.strip().splitlines()) == 1
    code, out, err = run(capsys, monkeypatch, *base, "--quiet")
    assert code == 0, err
    assert "pooled without function tokens" in err and "as the SAE recommends" in err
    code, out, err = run(capsys, monkeypatch, *base, "--skip-tokens", "none", "--replace", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert (res["skip_tokens"], res["skip_tokens_from"]) == ("none", "option") and res["docs_encoded"] == len(TEXTS)


def test_resuming_with_the_other_choice_is_refused_unasked_it_resumes_as_begun(tmp_path, tiny_bert_dir, sae):
    path = tmp_path / "r.duckdb"

    def stop(done, tokens, total):
        if done >= 2:
            raise KeyboardInterrupt

    with Store(path) as st:
        _corpus(st)
        with pytest.raises(KeyboardInterrupt):
            encode_corpus(st, "c", model=str(tiny_bert_dir), sae=sae, progress=stop,
                          config=EncodeConfig(device="cpu", chunk_docs=2, skip_tokens="function"))
        with pytest.raises(StoreError, match="skip_tokens: stored 'function', now None"):
            encode_corpus(st, "c", model=str(tiny_bert_dir), sae=sae,
                          config=EncodeConfig(device="cpu", chunk_docs=2, skip_tokens="none"))
        # re-running without the option resumes as the stored rows were pooled
        r = encode_corpus(st, "c", model=str(tiny_bert_dir), sae=sae, config=EncodeConfig(device="cpu", chunk_docs=2))
        assert (r.docs_already, r.docs_encoded) == (2, 2)
        assert (r.skip_tokens, r.skip_tokens_from) == ("function", "stored")


def test_ray_actors_pool_as_the_local_encode(tmp_path, tiny_bert_dir):
    ray = pytest.importorskip("ray")
    raw = make_sae(32, 64, k=8, hook="layers.1")
    raw.cfg.extra["saeembed_pooling"] = {"skip_tokens": "function"}  # the recommendation reaches the actors
    sae = load_sae(save_sae(raw, tmp_path / "sae"))
    _, local, _ = _encode(tmp_path / "local.duckdb", tiny_bert_dir, sae, chunk_docs=2)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        result, got, params = _encode(tmp_path / "ray.duckdb", tiny_bert_dir, sae, chunk_docs=2, backend="ray",
                                      workers=2)
    finally:
        ray.shutdown()
    assert params["skip_tokens"] == "function" and result.skip_tokens_from == "sae"
    assert got.equals(local)
    _check_against_reference(got, tiny_bert_dir, sae, POOLED)
