import numpy as np
import pytest
import torch

from saeembed.encode.capture import ActivationCapture
from saeembed.encode.models import load_model
from saeembed.encode.pipeline import EncodeConfig, encode_chunk
from saeembed.encode.pooling import TokenLatents, pool_max
from tests.conftest import make_sae


def test_pool_max_by_hand():
    # 3 documents, 6 tokens: doc of each token and its character span
    token_doc = torch.tensor([0, 0, 1, 1, 1, 2])
    token_span = torch.tensor([[0, 3], [4, 7], [0, 2], [3, 5], [6, 9], [0, 4]])
    # sparse latents (token row, feature, value)
    rows = torch.tensor([0, 1, 1, 2, 3, 4, 4, 5])
    feats = torch.tensor([7, 7, 2, 7, 7, 7, 2, 9])
    vals = torch.tensor([0.5, 1.5, 0.3, 2.0, 1.0, 3.0, 0.1, 0.4])
    lat = TokenLatents()
    lat.add(token_doc, token_span, rows[:4], feats[:4], vals[:4])  # two chunks, pooled together
    lat.add(token_doc, token_span, rows[4:], feats[4:], vals[4:])
    out = pool_max(lat, d_sae=10).sort("doc_idx", "feature")
    got = {(r["doc_idx"], r["feature"]): (round(r["value"], 6), r["active_tokens"], r["span_start"], r["span_end"])
           for r in out.iter_rows(named=True)}
    assert got == {
        (0, 2): (0.3, 1, 4, 7),
        (0, 7): (1.5, 2, 4, 7),  # max 1.5 on token 1 (span 4-7), fired on 2 tokens
        (1, 2): (0.1, 1, 6, 9),
        (1, 7): (3.0, 3, 6, 9),  # max 3.0 on token 4, fired on tokens 2, 3, 4
        (2, 9): (0.4, 1, 0, 4),
    }


@torch.no_grad()
def test_encode_chunk_matches_independent_pooling(tiny_bert_dir):
    loaded = load_model(tiny_bert_dir, device="cpu")
    sae = make_sae(32, 48, architecture="relu", seed=3)
    texts = ["the cat sat on the mat", "hello world", "my order was late and the refund price was bad"]
    cfg = EncodeConfig()
    with ActivationCapture(loaded, "layers.1") as cap:
        rows, docs = encode_chunk(loaded, cap, sae, texts, cfg, window=64)
        # Independent: one document at a time, plain torch, CLS/SEP dropped by position.
        for i, text in enumerate(texts):
            enc = loaded.tokenizer([text], return_tensors="pt")
            h = cap(enc["input_ids"], enc["attention_mask"])[0]
            ids = enc["input_ids"][0]
            keep = (ids != loaded.tokenizer.cls_token_id) & (ids != loaded.tokenizer.sep_token_id)
            z = torch.relu(h[keep] @ sae.W_enc + sae.b_enc)
            expect_max, expect_count = z.max(0).values, (z > 0).sum(0)
            mine = rows.filter(rows["doc_idx"] == i).sort("feature")
            feats = mine["feature"].to_numpy()
            assert set(feats) == set(torch.nonzero(expect_count).flatten().tolist())
            np.testing.assert_allclose(mine["value"].to_numpy(), expect_max[feats].numpy(), rtol=1e-5)
            np.testing.assert_array_equal(mine["active_tokens"].to_numpy(), expect_count[feats].numpy())
            assert docs["n_tokens"][i] == int(keep.sum())
            # the span of the strongest token is a real token of the text
            for s, e in zip(mine["span_start"], mine["span_end"]):
                assert 0 <= s < e <= len(text) and text[s:e].strip()
            # special tokens really are excluded: with them, some maxima would differ
            z_all = torch.relu(h @ sae.W_enc + sae.b_enc)
            assert not torch.allclose(z_all.max(0).values, expect_max)


def test_long_documents_are_split_not_truncated(tiny_bert_dir):
    loaded = load_model(tiny_bert_dir, device="cpu")
    sae = make_sae(32, 48, architecture="topk", k=4)
    long_text = " ".join(["the quick brown fox jumps over the lazy dog"] * 40)  # ~360 tokens, window 32
    with ActivationCapture(loaded, "layers.1") as cap:
        rows, docs = encode_chunk(loaded, cap, sae, [long_text, "hello"], EncodeConfig(), window=32)
    n_words = len(long_text.split())
    assert docs["n_tokens"][0] == n_words  # every word is one token in this vocab, none lost
    assert docs["n_windows"][0] == -(-n_words // 30)  # 30 content tokens per 32-token window
    assert docs["n_windows"][1] == 1
    # the strongest token of some feature lies beyond the first window
    assert rows.filter(rows["doc_idx"] == 0)["span_start"].max() > 200


def test_chat_template_tokens_are_not_pooled(tiny_gpt2_dir):
    loaded = load_model(tiny_gpt2_dir, device="cpu")
    sae = make_sae(32, 48, architecture="relu")
    text = "  hello world  "
    cfg = EncodeConfig(chat_template=True)
    with ActivationCapture(loaded, "layers.1") as cap:
        rows, docs = encode_chunk(loaded, cap, sae, [text], cfg, window=64, prompts=["the cat"])
        plain_rows, plain_docs = encode_chunk(loaded, cap, sae, [text], EncodeConfig(), window=64)
    content_tokens = len(loaded.tokenizer(text.strip(), add_special_tokens=False)["input_ids"])
    assert docs["n_tokens"][0] == content_tokens  # neither role markers nor the prompt were pooled
    assert plain_docs["n_tokens"][0] >= content_tokens
    for s, e in zip(rows["span_start"], rows["span_end"]):  # spans point into the original text
        assert text[s:e].strip() in ("hello", "world") or text[s:e].strip() in "hello world"


def test_blocked_pooling_equals_single_block(monkeypatch):
    import saeembed.encode.pooling as pooling

    g = torch.Generator().manual_seed(0)
    n_tok, d_sae = 400, 50
    token_doc = torch.sort(torch.randint(0, 37, (n_tok,), generator=g)).values
    token_span = torch.stack([torch.arange(n_tok), torch.arange(n_tok) + 1], 1)
    rows = torch.randint(0, n_tok, (3000,), generator=g)
    feats = torch.randint(0, d_sae, (3000,), generator=g)
    vals = torch.rand(3000, generator=g).round(decimals=1)  # many ties: the first token must win
    lat = TokenLatents()
    lat.add(token_doc, token_span, rows, feats, vals)
    whole = pool_max(lat, d_sae).sort("doc_idx", "feature")
    monkeypatch.setattr(pooling, "_MAX_BLOCK", 3 * d_sae)  # 3 documents per block
    blocked = pool_max(lat, d_sae).sort("doc_idx", "feature")
    assert whole.equals(blocked) and whole.height > 500
    # spot-check one cell against a direct computation
    d, f = whole["doc_idx"][7], whole["feature"][7]
    sel = (token_doc[rows] == d) & (feats == f)
    assert whole["value"][7] == pytest.approx(float(vals[sel].max()))
    assert whole["active_tokens"][7] == int(sel.sum())
    first_at_max = rows[sel][vals[sel] == vals[sel].max()][0]
    assert whole["span_start"][7] == int(first_at_max)
