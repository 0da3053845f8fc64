"""encode --keep-tokens: token rows beside unchanged document rows; re-pooled back to the document rows
exactly (max, count), mean/sum against an independent forward pass; export; resumable after kill -9."""

import random

import numpy as np
import polars as pl
import pytest
import torch

from saeembed.analysis.pooling import pooled_rows
from saeembed.documents import Documents
from saeembed.encode.pipeline import EncodeConfig, encode_corpus
from saeembed.errors import InputError
from saeembed.sae.formats import load_sae, save_sae
from saeembed.store import Store
from tests.conftest import CORPUS_WORDS, make_sae

rng = random.Random(3)
TEXTS = ["the quick brown fox jumps over the lazy dog and the cat sat on the mat with my refund",
         "hello world, please help with my account password", "great sound, terrible battery",
         "Ünïcode wörds: café naïve thanks"] + [" ".join(rng.choices(CORPUS_WORDS, k=rng.randint(3, 30))) for _ in range(8)]


def _encode(path, model, sae, *, keep, window=None):
    with Store(path) as st:
        st.add_corpus("c", Documents(pl.DataFrame({"doc_id": [f"d{i}" for i in range(len(TEXTS))], "text": TEXTS}),
                                     "text", "id", [], "mem", 0))
        r = encode_corpus(st, "c", model=str(model), sae=sae, config=EncodeConfig(device="cpu", window=window,
                                                                                 keep_tokens=keep, chunk_docs=5))
    return r


def _doc_rows(path):
    with Store(path, read_only=True) as st:
        return (st.query("SELECT doc_idx, feature, value, active_tokens, span_start, span_end FROM activations "
                         "ORDER BY doc_idx, feature"),
                st.query("SELECT doc_idx, n_tokens, n_windows FROM encoded_docs ORDER BY doc_idx"),
                st.query("SELECT feature, rank, doc_idx, value FROM exemplars ORDER BY feature, rank"))


@pytest.fixture(scope="module")
def encoded(tmp_path_factory, tiny_bert_dir):
    base = tmp_path_factory.mktemp("tokens")
    sae = load_sae(save_sae(make_sae(32, 64, k=8, hook="layers.1"), base / "sae"))
    out = {"sae": sae, "base": base}
    for window in (8, None):  # 8: documents span several windows
        for keep in (False, True):
            path = base / f"s-{window}-{keep}.duckdb"
            out[(window, keep)] = (path, _encode(path, tiny_bert_dir, sae, keep=keep, window=window))
    return out


@pytest.mark.parametrize("window", [8, None])
def test_document_rows_unchanged_and_token_rows_repool_to_them(encoded, window):
    (plain, _), (kept, result) = encoded[(window, False)], encoded[(window, True)]
    for a, b in zip(_doc_rows(plain), _doc_rows(kept)):
        assert a.equals(b)  # the same bytes with and without --keep-tokens
    with Store(kept, read_only=True) as st:
        info = st.corpus("c")
        s = st.encoded_sae(info)
        tokens = st.token_rows(info, s)
        docs = st.query("SELECT doc_idx, n_tokens, n_windows FROM encoded_docs")
        assert st.has_token_rows(info, s)
    assert result.token_rows == tokens.height > 0
    acts = _doc_rows(kept)[0]
    pooled = (tokens.group_by("doc_idx", "feature")
              .agg(mx=pl.col("value").max(), n=pl.len()).sort("doc_idx", "feature"))
    assert pooled.height == acts.height
    joined = acts.join(pooled, on=["doc_idx", "feature"], how="inner")
    assert joined.height == acts.height
    assert (joined["value"] == joined["mx"]).all()  # exactly, not approximately
    assert (joined["active_tokens"] == joined["n"]).all()
    if window == 8:
        assert (docs["n_windows"] > 1).any()
    # each content token once, numbered 0..n_tokens-1 across windows, its span the text it covers
    per_doc = tokens.group_by("doc_idx").agg(pl.col("token_index").n_unique().alias("u"),
                                             pl.col("token_index").max().alias("mx"))
    check = per_doc.join(docs, on="doc_idx")
    assert (check["u"] == check["n_tokens"]).all() and (check["mx"] == check["n_tokens"] - 1).all()
    assert tokens.select("doc_idx", "token_index", "feature").is_duplicated().sum() == 0
    spans = tokens.unique(["doc_idx", "token_index"]).sort("doc_idx", "token_index")
    for d, g in spans.group_by("doc_idx"):
        assert (np.diff(g["start"].to_numpy()) > 0).all()  # token order is text order
        assert all(TEXTS[d[0]][s:e].strip() for s, e in zip(g["start"], g["end"]))


def test_mean_and_sum_against_an_independent_forward_pass(encoded, tiny_bert_dir):
    from transformers import AutoTokenizer, BertModel

    path, _ = encoded[(None, True)]
    sae = encoded["sae"]
    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    model = BertModel.from_pretrained(tiny_bert_dir).eval()
    expect_sum, expect_mean, expect_count = {}, {}, {}
    for d, text in enumerate(TEXTS):
        enc = tok(text, return_tensors="pt", return_special_tokens_mask=True, return_offsets_mapping=True)
        with torch.no_grad():
            hidden = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                           output_hidden_states=True).hidden_states[2][0]  # layers.1 = output of block 1
            offsets = enc["offset_mapping"][0]
            special = torch.isin(enc["input_ids"][0], torch.tensor(tok.all_special_ids))  # [UNK] too
            content = (enc["special_tokens_mask"][0] == 0) & (offsets[:, 1] > offsets[:, 0]) & ~special
            z = sae.encode(hidden[content])  # [content tokens, d_sae], dense
        for f in torch.nonzero(z.sum(0) > 0).flatten().tolist():
            expect_sum[(d, f)] = float(z[:, f].sum())
            expect_mean[(d, f)] = float(z[:, f].sum()) / int(content.sum())
            expect_count[(d, f)] = int((z[:, f] > 0).sum())
    with Store(path, read_only=True) as st:
        got = {p: pooled_rows(st, "c", p) for p in ("sum", "mean", "count", "binary", "max")}
    for pool, expect in (("sum", expect_sum), ("mean", expect_mean), ("count", expect_count)):
        frame = got[pool]
        assert frame.height == len(expect)
        for d, f, v in frame.iter_rows():
            assert v == pytest.approx(expect[(d, f)], rel=1e-4, abs=1e-5), (pool, d, f)
    assert (got["binary"]["value"] == 1.0).all() and got["binary"].height == len(expect_sum)


def test_pooling_without_token_rows_names_keep_tokens(encoded):
    path, _ = encoded[(None, False)]
    with Store(path, read_only=True) as st:
        for pool in ("mean", "sum"):
            with pytest.raises(InputError, match="--keep-tokens"):
                pooled_rows(st, "c", pool)
        with pytest.raises(InputError, match="--keep-tokens"):
            st.export_tokens("c", encoded["base"] / "x.parquet")
        assert pooled_rows(st, "c", "count")["value"].min() >= 1  # count and binary need no token rows
        with pytest.raises(InputError, match="unknown pooling"):
            pooled_rows(st, "c", "median")


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_export_tokens_rows_and_spans_match_the_text(encoded, tmp_path, fmt):
    from typer.testing import CliRunner

    from saeembed.cli.app import app

    path, _ = encoded[(8, True)]
    out = tmp_path / f"t.{fmt}"
    res = CliRunner().invoke(app, ["export", "c", "--tokens", "--out", str(out), "--store", str(path), "--json"])
    assert res.exit_code == 0, res.output
    frame = {"parquet": pl.read_parquet, "csv": pl.read_csv, "jsonl": pl.read_ndjson}[fmt](out)
    assert frame.columns == ["doc_id", "token_index", "token", "start", "end", "feature", "value"]
    with Store(path, read_only=True) as st:
        info = st.corpus("c")
        tokens = st.token_rows(info, st.encoded_sae(info))
    assert frame.height == tokens.height
    for doc_id, token, start, end in frame.select("doc_id", "token", "start", "end").unique().iter_rows():
        assert TEXTS[int(doc_id[1:])][start:end] == token
    one = tokens["feature"][0]
    res = CliRunner().invoke(app, ["export", "c", "--tokens", "-f", str(one), "--out", str(out), "--store", str(path)])
    assert res.exit_code == 0, res.output
    only = {"parquet": pl.read_parquet, "csv": pl.read_csv, "jsonl": pl.read_ndjson}[fmt](out)
    assert set(only["feature"]) == {one} and only.height == int((tokens["feature"] == one).sum())


def test_resume_with_other_keep_tokens_choice_is_refused(encoded, tiny_bert_dir, tmp_path):
    from saeembed.errors import StoreError

    path = tmp_path / "s.duckdb"
    with Store(path) as st:
        st.add_corpus("c", Documents(pl.DataFrame({"doc_id": ["a", "b"], "text": TEXTS[:2]}), "text", "id", [], "mem", 0))
        info = st.corpus("c")
        sae_info = st.register_sae(encoded["sae"])
        st.begin_encoding(info, sae_info, "m", "layers.1", {})
        st.begin_token_rows(info, sae_info, True, 0)
        with pytest.raises(StoreError, match="--keep-tokens"):
            st.begin_token_rows(info, sae_info, False, 1)
