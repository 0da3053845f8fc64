"""Encoding honours the SAE's training setup: BOS, context size and the hook it names. Each check is
against a reference computed here with plain torch/transformers on a tiny model built in the test."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
import torch

from saeembed.documents import Documents
from saeembed.encode.capture import ActivationCapture
from saeembed.encode.models import load_model
from saeembed.encode.pipeline import EncodeConfig, encode_corpus
from saeembed.encode.tokens import bos_rule
from saeembed.errors import ModelError, SAEError
from tests.conftest import CORPUS_WORDS, make_sae

TEXTS = ["the cat sat on the mat and the dog sat on the lazy cat", "hello world",
         "quick brown fox jumps over the lazy dog please help with my order refund and billing account"]


@pytest.fixture(scope="module")
def gpt2_no_bos_dir(tmp_path_factory):
    """A tiny GPT-2 whose tokenizer, like the real one, adds no BOS token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2Model, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([" ".join(CORPUS_WORDS)] * 20, trainer)
    t = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                model_max_length=64)
    torch.manual_seed(1)
    cfg = GPT2Config(vocab_size=len(t), n_embd=32, n_layer=3, n_head=4, n_positions=64,
                     bos_token_id=t.bos_token_id, eos_token_id=t.eos_token_id)
    model = GPT2Model(cfg)
    with torch.no_grad():  # non-zero biases, so folding them is visible
        for block in model.h:
            block.attn.c_attn.bias.normal_(0, 0.5)
            block.ln_2.weight.normal_(1, 0.3)
            block.ln_2.bias.normal_(0, 0.3)
    path = tmp_path_factory.mktemp("gpt2_no_bos")
    model.save_pretrained(path)
    t.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def gpt2(gpt2_no_bos_dir):
    return load_model(gpt2_no_bos_dir, device="cpu")


def _ids(loaded, text):
    return loaded.tokenizer(text)["input_ids"]


def _forward_hidden(loaded, ids, layer):
    with torch.no_grad():
        out = loaded.model(input_ids=torch.tensor([ids]), output_hidden_states=True)
    return out.hidden_states[layer + 1][0]


def _corpus(texts):
    frame = pl.DataFrame({"doc_id": [f"d{i}" for i in range(len(texts))], "text": texts})
    return Documents(frame, "text", "id", [], "mem", 0)


# --- BOS ----------------------------------------------------------------------------------


def test_capture_prepends_bos_the_tokenizer_does_not_add(gpt2):
    bos = gpt2.tokenizer.bos_token_id
    ids = _ids(gpt2, TEXTS[0])
    assert ids[0] != bos  # the tokenizer adds none
    rule = bos_rule(gpt2.tokenizer, True)
    assert rule.add == bos and bos_rule(gpt2.tokenizer, None).active is False
    with ActivationCapture(gpt2, "layers.1", bos=rule) as cap:
        got = cap(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long))[0]
    with_bos = _forward_hidden(gpt2, [bos] + ids, 1)[1:]
    without = _forward_hidden(gpt2, ids, 1)
    torch.testing.assert_close(got, with_bos, atol=1e-5, rtol=1e-5)
    assert ((without - with_bos).norm() / with_bos.norm()).item() > 0.05  # BOS changes what the SAE sees


def test_encode_with_bos_and_context_size_matches_manual_windows(store, gpt2, gpt2_no_bos_dir):
    """SAE says prepend_bos and context_size 8: each window is BOS + 7 tokens, max-pooled over windows."""
    sae = make_sae(32, 64, architecture="topk", k=6, hook="layers.1")
    sae.cfg.prepend_bos, sae.cfg.context_size = True, 8
    store.add_corpus("c", _corpus(TEXTS))
    r = encode_corpus(store, "c", model=str(gpt2_no_bos_dir), sae=sae, config=EncodeConfig(device="cpu"))
    assert r.split_docs == 2  # two documents are longer than 7 tokens
    got = store.activations("c").sort("doc_id", "feature")
    bos = gpt2.tokenizer.bos_token_id
    rows = []
    for i, text in enumerate(TEXTS):
        ids = _ids(gpt2, text)
        pooled = torch.zeros(sae.d_sae)
        for start in range(0, len(ids), 7):
            hidden = _forward_hidden(gpt2, [bos] + ids[start : start + 7], 1)[1:]
            pooled = torch.maximum(pooled, sae.encode(hidden).max(0).values)
        rows += [(f"d{i}", f, pooled[f].item()) for f in pooled.nonzero().flatten().tolist()]
    expected = pl.DataFrame(rows, schema=["doc_id", "feature", "value"], orient="row").sort("doc_id", "feature")
    assert got["doc_id"].to_list() == expected["doc_id"].to_list()
    assert got["feature"].to_list() == expected["feature"].to_list()
    np.testing.assert_allclose(got["value"].to_numpy(), expected["value"].to_numpy(), rtol=1e-4, atol=1e-5)
    n_tokens = sum(len(_ids(gpt2, t)) for t in TEXTS)
    assert r.tokens == n_tokens  # the BOS is never pooled


def test_bos_is_stripped_when_the_sae_was_trained_without(tiny_gpt2_dir):
    loaded = load_model(tiny_gpt2_dir, device="cpu")  # this tokenizer adds a BOS (Llama style)
    ids = _ids(loaded, TEXTS[1])
    assert ids[0] == loaded.tokenizer.bos_token_id
    rule = bos_rule(loaded.tokenizer, False)
    with ActivationCapture(loaded, "layers.0", bos=rule) as cap:
        got = cap(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long))[0]
    torch.testing.assert_close(got[1:], _forward_hidden(loaded, ids[1:], 0), atol=1e-5, rtol=1e-5)
    assert torch.all(got[0] == 0)


def test_context_size_caps_an_explicit_window_with_a_warning(store, gpt2, gpt2_no_bos_dir):
    sae = make_sae(32, 64, hook="layers.0")
    sae.cfg.context_size = 6
    store.add_corpus("c", _corpus(TEXTS))
    r = encode_corpus(store, "c", model=str(gpt2_no_bos_dir), sae=sae, config=EncodeConfig(window=32))
    assert any("contexts of 6 tokens" in w for w in r.warnings)
    lengths = [len(_ids(gpt2, t)) for t in TEXTS]
    assert r.split_docs == sum(n > 6 for n in lengths) == 2 and max(lengths) <= 32  # 32 alone splits nothing


# --- hooks inside a block -------------------------------------------------------------------


def _grab(module, pre=False):
    seen = {}

    def keep(value) -> None:  # a hook must return None, or it replaces the module's input/output
        seen.setdefault("x", value[0] if isinstance(value, tuple) else value)

    if pre:
        h = module.register_forward_pre_hook(lambda m, a: keep(a))
    else:
        h = module.register_forward_hook(lambda m, a, o: keep(o))
    return seen, h


def _reference(loaded, ids, layer):
    """Hidden states and, by plain forward hooks, the block's attention output, MLP output, ln_1/ln_2
    outputs and c_proj input, from one full forward pass."""
    block = loaded.blocks[layer]
    grabs = {"attn": _grab(block.attn), "mlp": _grab(block.mlp), "ln1": _grab(block.ln_1), "ln2": _grab(block.ln_2),
             "z": _grab(block.attn.c_proj, pre=True)}
    with torch.no_grad():
        hs = loaded.model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states
    for _, h in grabs.values():
        h.remove()
    return hs, {k: v["x"][0] for k, (v, _) in grabs.items()}


def _capture(loaded, hook, ids):
    with ActivationCapture(loaded, hook) as cap:
        return cap(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long))[0]


def test_mlp_out_resid_mid_and_ln2(gpt2):
    ids = _ids(gpt2, TEXTS[2])
    hs, ref = _reference(gpt2, ids, 1)
    torch.testing.assert_close(_capture(gpt2, "blocks.1.hook_mlp_out", ids), ref["mlp"], atol=1e-5, rtol=1e-5)
    mid = hs[1][0] + ref["attn"]  # residual after attention: block input + attention output
    torch.testing.assert_close(_capture(gpt2, "blocks.1.hook_resid_mid", ids), mid, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mid + ref["mlp"], hs[2][0], atol=1e-5, rtol=1e-5)  # the reference is sound
    torch.testing.assert_close(_capture(gpt2, "layers.1.ln2", ids), ref["ln2"], atol=1e-5, rtol=1e-5)
    # TransformerLens's default (norm weights folded away): centred and scaled, no weight or bias
    centred = mid - mid.mean(-1, keepdim=True)
    folded = centred / (centred.pow(2).mean(-1, keepdim=True) + gpt2.model.config.layer_norm_epsilon).sqrt()
    torch.testing.assert_close(_capture(gpt2, "blocks.1.ln2.hook_normalized", ids), folded, atol=1e-5, rtol=1e-5)


def test_hook_z_is_c_proj_input_and_folded_z_drops_the_value_bias(gpt2):
    ids = _ids(gpt2, TEXTS[2])
    _, ref = _reference(gpt2, ids, 2)
    z = _capture(gpt2, "layers.2.attn_z", ids)
    torch.testing.assert_close(z, ref["z"], atol=1e-5, rtol=1e-5)
    assert z.shape[-1] == 32  # n_heads * d_head, heads concatenated
    # independent: per head, attention pattern x values computed without their bias
    from transformers import AutoModel

    eager = AutoModel.from_pretrained(gpt2.name, attn_implementation="eager").eval()
    with torch.no_grad():
        pattern = eager(input_ids=torch.tensor([ids]), output_attentions=True).attentions[2][0]  # [H, T, T]
    attn = gpt2.blocks[2].attn
    W_v = attn.c_attn.weight[:, 64:96]  # Conv1D: x @ W; q, k, v side by side
    v = (ref["ln1"] @ W_v).view(len(ids), 4, 8).transpose(0, 1)  # [H, T, d_head], no bias
    expected = (pattern @ v).transpose(0, 1).reshape(len(ids), 32)
    got = _capture(gpt2, "blocks.2.attn.hook_z", ids)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert (got - z).abs().max() > 0.1  # the bias was large enough to matter


def test_capture_stops_inside_the_block(gpt2):
    started = []
    handles = [b.mlp.register_forward_pre_hook(lambda m, a, i=i: started.append(i)) for i, b in enumerate(gpt2.blocks)]
    try:
        _capture(gpt2, "layers.1.mid", _ids(gpt2, "hello world"))
    finally:
        for h in handles:
            h.remove()
    assert started == [0]  # block 1's MLP and everything after never ran


def test_hooks_that_cannot_be_captured_are_refused_by_name(store, tiny_bert_dir, gpt2_no_bos_dir):
    bert = load_model(tiny_bert_dir, device="cpu")
    with pytest.raises(ModelError, match=r"blocks.1.ln2.hook_normalized .*cannot be captured on .*BertLayer"):
        ActivationCapture(bert, "blocks.1.ln2.hook_normalized")
    store.add_corpus("c", _corpus(TEXTS))
    sae = make_sae(32, 64, hook="blocks.1.hook_attn_out")
    with pytest.raises(SAEError, match=r"trained at hook 'blocks.1.hook_attn_out', which saeembed cannot capture"):
        encode_corpus(store, "c", model=str(gpt2_no_bos_dir), sae=sae)
    assert store.info()["activation_rows"] == 0


def test_a_contradicting_hook_is_refused_unless_forced(store, gpt2_no_bos_dir):
    sae = make_sae(32, 64, hook="layers.1.mlp_out")
    store.add_corpus("c", _corpus(TEXTS))
    with pytest.raises(SAEError, match=r"--hook layers.1 is not the hook the SAE was trained on \(layers.1.mlp_out\)"):
        encode_corpus(store, "c", model=str(gpt2_no_bos_dir), sae=sae, hook="layers.1")
    same = encode_corpus(store, "c", model=str(gpt2_no_bos_dir), sae=sae, hook="blocks.1.hook_mlp_out")
    assert same.hook == "layers.1.mlp_out" and not same.warnings
    forced = encode_corpus(store, "c", model=str(gpt2_no_bos_dir), sae=sae, hook="layers.1", force_hook=True,
                           config=EncodeConfig(replace=True))
    assert forced.hook == "layers.1" and any("as forced" in w for w in forced.warnings)


def test_mlp_out_sae_encodes_what_a_forward_hook_on_the_mlp_sees(store, gpt2, gpt2_no_bos_dir):
    sae = make_sae(32, 64, architecture="relu", hook="blocks.0.hook_mlp_out")
    store.add_corpus("c", _corpus(TEXTS[:1]))
    encode_corpus(store, "c", model=str(gpt2_no_bos_dir), sae=sae)
    ids = _ids(gpt2, TEXTS[0])
    _, ref = _reference(gpt2, ids, 0)
    pooled = sae.encode(ref["mlp"]).max(0).values.detach()
    got = store.activations("c").sort("feature")
    assert got["feature"].to_list() == pooled.nonzero().flatten().tolist()
    np.testing.assert_allclose(got["value"].to_numpy(), pooled[pooled > 0].numpy(), rtol=1e-4, atol=1e-5)
    assert not math.isclose(got["value"].sum(), 0.0)


def test_folded_z_on_grouped_query_attention(tmp_path, gpt2):
    """Llama layout with 4 query heads sharing 2 key/value heads, and value biases."""
    from transformers import AutoModel, LlamaConfig, LlamaModel

    torch.manual_seed(2)
    cfg = LlamaConfig(vocab_size=len(gpt2.tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, attention_bias=True, max_position_embeddings=64)
    model = LlamaModel(cfg)
    with torch.no_grad():
        model.layers[1].self_attn.v_proj.bias.normal_(0, 0.5)
    model.save_pretrained(tmp_path)
    gpt2.tokenizer.save_pretrained(tmp_path)
    llama = load_model(tmp_path, device="cpu")
    ids = _ids(llama, TEXTS[0])
    block = llama.blocks[1]
    (ln1, h1), (z_in, h2) = _grab(block.input_layernorm), _grab(block.self_attn.o_proj, pre=True)
    eager = AutoModel.from_pretrained(tmp_path, attn_implementation="eager").eval()
    with torch.no_grad():
        llama.model(input_ids=torch.tensor([ids]))
        pattern = eager(input_ids=torch.tensor([ids]), output_attentions=True).attentions[1][0]  # [4, T, T]
    h1.remove(), h2.remove()
    v = (ln1["x"][0] @ block.self_attn.v_proj.weight.T).view(len(ids), 2, 8).transpose(0, 1)  # no bias
    expected = (pattern @ v.repeat_interleave(2, dim=0)).transpose(0, 1).reshape(len(ids), 32)
    torch.testing.assert_close(_capture(llama, "blocks.1.attn.hook_z", ids), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(_capture(llama, "layers.1.attn_z", ids), z_in["x"][0], atol=1e-5, rtol=1e-5)
    mid_in = _grab(block.post_attention_layernorm, pre=True)
    with torch.no_grad():
        llama.model(input_ids=torch.tensor([ids]))
    mid_in[1].remove()
    torch.testing.assert_close(_capture(llama, "blocks.1.hook_resid_mid", ids), mid_in[0]["x"][0], atol=1e-5, rtol=1e-5)
