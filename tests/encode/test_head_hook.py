"""SAEs trained on one attention head (SAELens hook_head_index on attn.hook_z): the capture keeps that
head's slice of z, checked against attention computed by hand from a tiny GPT-2's weights (heads split
by hand, causal softmax, values with and without their bias); an SAELens folder naming a head encodes
what that head's z gives; what cannot be honoured is refused in one line."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest
import torch
from safetensors.torch import save_file

from saeembed.encode.capture import ActivationCapture, hook_width
from saeembed.encode.pipeline import EncodeConfig, encode_corpus
from saeembed.errors import ModelError, SAEError
from saeembed.sae.formats import load_sae
from tests.encode.test_faithful import TEXTS, _corpus, _grab, _ids, gpt2, gpt2_no_bos_dir  # noqa: F401

H, D_HEAD = 4, 8  # the tiny GPT-2: 4 heads of 8 (n_embd 32)


def _heads_by_hand(loaded, ids, layer):
    """[H, T, d_head] z of every head of block `layer`, with and without the value bias."""
    block = loaded.blocks[layer]
    seen, handle = _grab(block.ln_1)
    with torch.no_grad():
        loaded.model(input_ids=torch.tensor([ids]))
    handle.remove()
    x = seen["x"][0].detach()  # [T, 32]: what the attention reads
    W, b = block.attn.c_attn.weight.detach(), block.attn.c_attn.bias.detach()  # Conv1D: x @ W + b, q|k|v
    q, k, v = (x @ W + b).split(H * D_HEAD, dim=-1)
    T = len(ids)
    q, k, v = (t.reshape(T, H, D_HEAD).transpose(0, 1) for t in (q, k, v))
    scores = (q @ k.transpose(1, 2)) / math.sqrt(D_HEAD)
    scores = scores.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf"))
    pattern = scores.softmax(-1)
    b_v = b[2 * H * D_HEAD:].reshape(H, 1, D_HEAD)
    return pattern @ v, pattern @ (v - b_v)


def _capture(loaded, hook, ids):
    with ActivationCapture(loaded, hook) as cap:
        return cap(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long))[0]


def test_one_head_is_that_heads_slice_of_z(gpt2):  # noqa: F811
    ids = _ids(gpt2, TEXTS[2])
    z, z_folded = _heads_by_hand(gpt2, ids, 2)
    # the reference is sound: its heads side by side are what the output projection reads
    concat = z.transpose(0, 1).reshape(len(ids), H * D_HEAD)
    torch.testing.assert_close(_capture(gpt2, "layers.2.attn_z", ids), concat, atol=1e-5, rtol=1e-5)
    for head in range(H):
        got = _capture(gpt2, f"layers.2.attn_z.head{head}", ids)
        assert got.shape == (len(ids), D_HEAD)
        torch.testing.assert_close(got, z[head], atol=1e-5, rtol=1e-5)
        folded = _capture(gpt2, f"blocks.2.attn.hook_z.head{head}", ids)  # TransformerLens's default: no bias
        torch.testing.assert_close(folded, z_folded[head], atol=1e-5, rtol=1e-5)
        assert (folded - got).abs().max() > 0.1  # the bias was large enough to matter
    assert hook_width(gpt2, "layers.2.attn_z.head3") == D_HEAD and hook_width(gpt2, "layers.2.attn_z") == H * D_HEAD


def _saelens_folder(path, cfg: dict, d_in=D_HEAD, d_sae=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = {"W_enc": torch.randn(d_in, d_sae, generator=g), "b_enc": torch.randn(d_sae, generator=g) * 0.5,
         "W_dec": torch.randn(d_sae, d_in, generator=g), "b_dec": torch.randn(d_in, generator=g) * 0.5}
    path.mkdir(parents=True)
    save_file(w, str(path / "sae_weights.safetensors"))
    base = {"architecture": "standard", "d_in": d_in, "d_sae": d_sae, "dtype": "float32", "prepend_bos": False,
            "apply_b_dec_to_input": True, "normalize_activations": "none", "sae_lens_version": "6.5.0"}
    (path / "cfg.json").write_text(json.dumps(base | cfg))
    return w


@pytest.mark.parametrize("unfolded", [False, True])
def test_saelens_sae_of_one_head_encodes_that_heads_z(store, gpt2, gpt2_no_bos_dir, tmp_path, unfolded):  # noqa: F811
    cfg = {"hook_name": "blocks.2.attn.hook_z", "hook_head_index": 1}
    if unfolded:
        cfg["model_from_pretrained_kwargs"] = {"fold_value_biases": False}
    w = _saelens_folder(tmp_path / "sae", cfg)
    sae = load_sae(tmp_path / "sae")
    assert sae.cfg.hook == ("layers.2.attn_z.head1" if unfolded else "layers.2.attn_z.folded.head1")
    store.add_corpus("c", _corpus(TEXTS))
    r = encode_corpus(store, "c", model=str(gpt2_no_bos_dir), sae=tmp_path / "sae", config=EncodeConfig(device="cpu"))
    assert r.hook == sae.cfg.hook and not r.warnings
    rows = []
    for i, text in enumerate(TEXTS):  # SAELens: ReLU((hook_z[:, :, 1] - b_dec) W_enc + b_enc), max over tokens
        z, z_folded = _heads_by_hand(gpt2, _ids(gpt2, text), 2)
        x = (z if unfolded else z_folded)[1]
        pooled = torch.relu((x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]).max(0).values
        rows += [(f"d{i}", f, pooled[f].item()) for f in pooled.nonzero().flatten().tolist()]
    expected = pl.DataFrame(rows, schema=["doc_id", "feature", "value"], orient="row").sort("doc_id", "feature")
    got = store.activations("c").sort("doc_id", "feature")
    assert expected.height > 10
    assert got["doc_id"].to_list() == expected["doc_id"].to_list()
    assert got["feature"].to_list() == expected["feature"].to_list()
    np.testing.assert_allclose(got["value"].to_numpy(), expected["value"].to_numpy(), rtol=1e-4, atol=1e-5)


def test_what_cannot_be_honoured_is_refused_in_one_line(store, gpt2, gpt2_no_bos_dir, tmp_path):  # noqa: F811
    store.add_corpus("c", _corpus(TEXTS))
    _saelens_folder(tmp_path / "h4", {"hook_name": "blocks.2.attn.hook_z", "hook_head_index": 4})
    with pytest.raises(ModelError, match=r"^hook layers.2.attn_z.folded.head4: .* has 4 attention heads per block "
                                         r"\(head 0 … 3\), no head 4$"):
        encode_corpus(store, "c", model=str(gpt2_no_bos_dir), sae=tmp_path / "h4")
    _saelens_folder(tmp_path / "q", {"hook_name": "blocks.2.attn.hook_q", "hook_head_index": 1})
    with pytest.raises(SAEError, match=r"^the SAE was trained at hook 'blocks.2.attn.hook_q \(head 1 only\)', "
                                       r"which saeembed cannot capture"):
        encode_corpus(store, "c", model=str(gpt2_no_bos_dir), sae=tmp_path / "q")
    _saelens_folder(tmp_path / "wide", {"hook_name": "blocks.2.attn.hook_z", "hook_head_index": 1}, d_in=H * D_HEAD)
    with pytest.raises(SAEError, match=r"SAE width 32 does not match .*width at layers.2.attn_z.folded.head1 8"):
        encode_corpus(store, "c", model=str(gpt2_no_bos_dir), sae=tmp_path / "wide")
    with pytest.raises(ModelError, match=r"only attention z .* can be read one head at a time"):
        ActivationCapture(gpt2, "layers.1.mlp_out.head2")
    assert store.info()["activation_rows"] == 0
