"""Files saeembed writes read the same in SAELens 6, and SAELens configs read as SAELens reads them.

sae_lens cannot be installed here, so `saelens_encode` below re-implements the rule SAELens 6 applies in
`SAE.load_from_disk` (sae_lens/saes/sae.py, loading/pretrained_sae_loaders.py):
- config: a file without `sae_lens_version` is an old-style config: `activation_fn_kwargs.k` is the TopK
  k, `apply_b_dec_to_input` defaults to True, `normalize_activations` to "none";
- weights: every tensor is cast to the config's `dtype` (`read_sae_components_from_disk`);
- input: `expected_average_only_in` is NOT applied from disk (only `from_pretrained` folds a factor
  from its release table); then `sae_in - b_dec * apply_b_dec_to_input`;
- latents: standard = ReLU(x W_enc + b_enc); topk = ReLU of the k largest, rest 0; jumprelu = ReLU(pre)
  where pre > threshold.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from saeembed.sae import SAE, SAEConfig, load_sae, save_sae
from saeembed.sae.default import DEFAULT_SAE_DIR, load_default_sae

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


def saelens_encode(folder, x: torch.Tensor) -> torch.Tensor:
    cfg = json.loads((folder / "cfg.json").read_text())
    dtype = DTYPES[cfg["dtype"]]
    w = {k: v.to(dtype) for k, v in load_file(str(folder / "sae_weights.safetensors")).items()}
    arch = cfg.get("architecture", "standard")
    x = x.to(dtype)
    if cfg.get("normalize_activations", "none") not in ("none", "expected_average_only_in", None):
        raise NotImplementedError
    x = x - w["b_dec"] * cfg.get("apply_b_dec_to_input", True)
    pre = x @ w["W_enc"] + w["b_enc"]
    if arch == "standard":
        return torch.relu(pre)
    if arch == "topk":
        k = cfg.get("k") or cfg["activation_fn_kwargs"]["k"]
        top = pre.topk(k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))
    if arch == "jumprelu":
        return torch.relu(pre) * (pre > w["threshold"])
    raise NotImplementedError(arch)


def _sae(architecture, input_scale=1.0, output_scale=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    d_in, d_sae = 24, 96
    cfg = SAEConfig(d_in, d_sae, architecture, k=6 if architecture == "topk" else None, apply_b_dec_to_input=True,
                    input_scale=input_scale, output_scale=output_scale, hook="layers.2", model="gpt2")
    thr = torch.rand(d_sae, generator=g) * 0.5 + 0.2 if architecture == "jumprelu" else None
    return SAE(cfg, torch.randn(d_in, d_sae, generator=g) * 0.3, torch.randn(d_sae, generator=g) * 0.2,
               torch.randn(d_sae, d_in, generator=g) * 0.3, torch.randn(d_in, generator=g), thr)


def _x(n=500, d=24, scale=3.0, seed=1):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed)) * scale


@pytest.mark.parametrize("architecture", ["relu", "topk", "jumprelu"])
@pytest.mark.parametrize("scales", [(1.0, None), (0.37, None), (0.37, 2.5)])
def test_saelens_reads_a_saved_sae_as_saeembed_does(tmp_path, architecture, scales):
    sae = _sae(architecture, *scales)
    folder = save_sae(sae, tmp_path / "s")
    x = _x()
    ours = sae.encode(x).detach()
    theirs = saelens_encode(folder, x)
    back = load_sae(folder).encode(x).detach()
    assert 0.02 < (ours > 0).float().mean() < 0.9
    # the same active set on every row, and the same values
    assert torch.equal(theirs > 0, ours > 0) and torch.equal(back > 0, ours > 0)
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(back, ours, atol=1e-4, rtol=1e-4)


def test_the_old_way_of_writing_a_scale_disagreed(tmp_path):
    """What the fix prevents: a factor written as expected_average_only_in is never applied by SAELens."""
    sae = _sae("topk", 0.37)
    folder = save_sae(_sae("topk", 1.0), tmp_path / "s")  # the unscaled weights, plus the old cfg keys
    cfg = json.loads((folder / "cfg.json").read_text())
    cfg.update(normalize_activations="expected_average_only_in", norm_scaling_factor=0.37)
    (folder / "cfg.json").write_text(json.dumps(cfg))
    x = _x()
    same_rows = (saelens_encode(folder, x) > 0).eq(sae.encode(x) > 0).all(1).float().mean()
    assert same_rows < 0.2


def test_default_sae_says_float32_and_saelens_gets_saeembeds_latents():
    cfg = json.loads((DEFAULT_SAE_DIR / "cfg.json").read_text())
    assert cfg["dtype"] == "float32"
    stored = load_file(str(DEFAULT_SAE_DIR / "sae_weights.safetensors"))
    assert stored["W_enc"].dtype == torch.float16  # storage stays half: SAELens upcasts on load
    sae = load_default_sae()
    assert torch.equal(sae.W_enc, stored["W_enc"].float())  # the weights are the shipped values
    x = _x(2000, 384, scale=1.0, seed=3) + sae.b_dec.detach()
    ours, theirs = sae.encode(x).detach(), saelens_encode(DEFAULT_SAE_DIR, x)
    assert torch.equal(ours > 0, theirs > 0)
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=1e-4)


# --- SAELens configs as SAELens reads them ---------------------------------------------------


def _write(folder, cfg):
    folder.mkdir(parents=True, exist_ok=True)
    sae = _sae("relu")
    save_file({n: getattr(sae, n).detach().contiguous() for n in ("W_enc", "b_enc", "W_dec", "b_dec")},
              str(folder / "sae_weights.safetensors"))
    base = {"architecture": "standard", "d_in": 24, "d_sae": 96, "dtype": "float32", "hook_name": "blocks.2.hook_resid_post"}
    (folder / "cfg.json").write_text(json.dumps({**base, **cfg}))
    return load_sae(folder)


@pytest.mark.parametrize("cfg, bos, ctx", [
    ({}, True, None),  # absent: SAELens's own default, True
    ({"prepend_bos": False, "context_size": 128}, False, 128),
    ({"sae_lens_version": "6.5.0", "metadata": {"prepend_bos": True, "context_size": 1024}}, True, 1024),
])
def test_prepend_bos_and_context_size(tmp_path, cfg, bos, ctx):
    sae = _write(tmp_path / "s", cfg)
    assert (sae.cfg.prepend_bos, sae.cfg.context_size) == (bos, ctx)


@pytest.mark.parametrize("cfg, hook", [
    ({"hook_name": "blocks.3.hook_mlp_out"}, "layers.3.mlp_out"),
    ({"hook_name": "blocks.3.hook_resid_mid"}, "layers.3.mid"),
    ({"hook_name": "blocks.3.hook_resid_pre"}, "layers.3.pre"),
    ({"hook_name": "blocks.3.attn.hook_z", "reshape_activations": "hook_z"}, "layers.3.attn_z.folded"),
    ({"hook_name": "blocks.3.attn.hook_z", "model_from_pretrained_kwargs": {"fold_value_biases": False}},
     "layers.3.attn_z"),
    ({"hook_name": "blocks.3.ln2.hook_normalized"}, "layers.3.ln2.folded"),
    ({"hook_name": "blocks.3.ln2.hook_normalized", "model_from_pretrained_kwargs": {"fold_ln": False}}, "layers.3.ln2"),
    ({"hook_name": "blocks.3.hook_attn_out"}, "blocks.3.hook_attn_out"),  # kept as written: encode refuses it
    ({"hook_name": "blocks.3.attn.hook_z", "hook_head_index": 2}, "layers.3.attn_z.folded.head2"),
])
def test_hook_names(tmp_path, cfg, hook):
    assert _write(tmp_path / "s", cfg).cfg.hook == hook


@pytest.mark.parametrize("hook", ["layers.3.attn_z", "layers.3.ln2", "layers.3.mlp_out"])
def test_saved_hooks_say_how_transformerlens_must_load_the_model(tmp_path, hook):
    sae = _sae("relu")
    sae.cfg.hook = hook
    cfg = json.loads((save_sae(sae, tmp_path / "s") / "cfg.json").read_text())
    expected = {"layers.3.attn_z": ("blocks.3.attn.hook_z", {"fold_value_biases": False}),
                "layers.3.ln2": ("blocks.3.ln2.hook_normalized", {"fold_ln": False}),
                "layers.3.mlp_out": ("blocks.3.hook_mlp_out", None)}[hook]
    assert (cfg["hook_name"], cfg.get("model_from_pretrained_kwargs")) == expected
    assert cfg.get("reshape_activations", "none") == ("hook_z" if "attn_z" in hook else "none")
    assert load_sae(tmp_path / "s").cfg.hook == hook
    np.testing.assert_equal(cfg["dtype"], "float32")
