"""SAELens configs with hook_head_index: an attn.hook_z SAE of one head reads as hook
`layers.N.attn_z[.folded].headH` and is written back so that SAELens reads the same head; a head index
on any other hook, or one that is not a head number, is kept as written (encode refuses it by name)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from saeembed.sae import SAE, SAEConfig, load_sae, save_sae
from tests.sae.test_saelens_compat import saelens_encode


def _write(path, cfg: dict, d_in=8, d_sae=16):
    g = torch.Generator().manual_seed(0)
    path.mkdir(parents=True)
    save_file({"W_enc": torch.randn(d_in, d_sae, generator=g), "b_enc": torch.randn(d_sae, generator=g),
               "W_dec": torch.randn(d_sae, d_in, generator=g), "b_dec": torch.randn(d_in, generator=g)},
              str(path / "sae_weights.safetensors"))
    (path / "cfg.json").write_text(json.dumps({"d_in": d_in, "d_sae": d_sae, "dtype": "float32"} | cfg))
    return load_sae(path)


@pytest.mark.parametrize("cfg, hook", [
    ({"hook_name": "blocks.3.attn.hook_z", "hook_head_index": 2}, "layers.3.attn_z.folded.head2"),
    ({"hook_name": "blocks.3.attn.hook_z", "hook_head_index": 0,
      "model_from_pretrained_kwargs": {"fold_value_biases": False}}, "layers.3.attn_z.head0"),
    ({"hook_point": "blocks.3.attn.hook_z", "hook_point_head_index": 5}, "layers.3.attn_z.folded.head5"),  # SAELens < 1
    ({"hook_name": "blocks.3.attn.hook_z", "metadata": {"hook_head_index": 1}}, "layers.3.attn_z.folded.head1"),
    ({"hook_name": "blocks.3.attn.hook_q", "hook_head_index": 2}, "blocks.3.attn.hook_q (head 2 only)"),
    ({"hook_name": "blocks.3.hook_resid_post", "hook_head_index": 2}, "blocks.3.hook_resid_post (head 2 only)"),
    ({"hook_name": "blocks.3.attn.hook_z", "hook_head_index": -1}, "blocks.3.attn.hook_z (head -1 only)"),
    ({"hook_name": "blocks.3.attn.hook_z", "hook_head_index": "2"}, "blocks.3.attn.hook_z (head 2 only)"),
    ({"hook_name": "blocks.3.attn.hook_z", "hook_head_index": None}, "layers.3.attn_z.folded"),
])
def test_head_index_read(tmp_path, cfg, hook):
    assert _write(tmp_path / "s", cfg).cfg.hook == hook


@pytest.mark.parametrize("hook, fold", [("layers.3.attn_z.folded.head2", None),
                                        ("layers.3.attn_z.head2", {"fold_value_biases": False})])
def test_a_head_sae_is_written_as_saelens_reads_one_head(tmp_path, hook, fold):
    g = torch.Generator().manual_seed(1)
    sae = SAE(SAEConfig(8, 16, "relu", hook=hook, model="gpt2"), torch.randn(8, 16, generator=g),
              torch.randn(16, generator=g), torch.randn(16, 8, generator=g), torch.randn(8, generator=g))
    folder = save_sae(sae, tmp_path / "s")
    cfg = json.loads((folder / "cfg.json").read_text())
    assert (cfg["hook_name"], cfg["hook_head_index"], cfg.get("model_from_pretrained_kwargs")) == (
        "blocks.3.attn.hook_z", 2, fold)
    assert cfg.get("reshape_activations", "none") == "none"  # SAELens hands it hook_z[:, :, 2], d_head wide
    cfg.pop("saeembed")  # as SAELens alone would read it
    (folder / "cfg.json").write_text(json.dumps(cfg))
    again = load_sae(folder)
    assert again.cfg.hook == hook
    x = torch.randn(50, 8, generator=g)
    torch.testing.assert_close(again.encode(x), saelens_encode(folder, x), atol=1e-5, rtol=1e-5)
    assert (sae.encode(x) > 0).sum() > 0
