"""SAELens normalisations, gated SAEs and transcoders (SAELens and sparsify), each against the SAELens or
sparsify rule re-implemented here in plain torch from its source:

- sae_lens/saes/sae.py `process_sae_in`: dtype, then `run_time_activation_norm_fn_in`, then minus
  b_dec * apply_b_dec_to_input. `_setup_activation_normalization`: constant_norm_rescale multiplies by
  sqrt(d_in) / |x| and decode divides by the same coefficient; layer_norm is (x - mean) / (std + 1e-5) with
  torch's default (unbiased) std, and decode returns out * std + mean, both from the last encode.
- sae_lens/saes/gated_sae.py `GatedSAE.encode`: (x W_enc + b_gate > 0) * relu(x (W_enc e^r_mag) + b_mag).
- sae_lens/saes/transcoder.py: `process_sae_in` never subtracts b_dec; encode = relu / jumprelu of
  x W_enc + b_enc; decode = z W_dec + b_dec (d_out wide), no norm undone.
- sparsify trainer.py: a transcoder reads the hooked module's input (`inputs if cfg.transcode else
  outputs`); sparse_coder.py encodes relu(x W^T + b) without subtracting b_dec, then top-k.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from saeembed.errors import SAEError
from saeembed.sae import load_sae, save_sae
from saeembed.sae.describe import describe_sae
from saeembed.sae.metrics import evaluate_sae

D_IN, D_SAE, D_OUT = 12, 48, 20


def gen(seed):
    return torch.Generator().manual_seed(seed)


def weights(seed=0, d_out=D_IN):
    g = gen(seed)
    return {"W_enc": torch.randn(D_IN, D_SAE, generator=g) * 0.4, "b_enc": torch.randn(D_SAE, generator=g) * 0.3 - 0.1,
            "W_dec": torch.randn(D_SAE, d_out, generator=g) * 0.4, "b_dec": torch.randn(d_out, generator=g) * 0.8}


def xs(n=60, seed=1, scale=3.0):
    g = gen(seed)
    return torch.randn(n, D_IN, generator=g) * scale + torch.randn(D_IN, generator=g)  # per-token means differ


def write(folder, cfg, tensors):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cfg.json").write_text(json.dumps(cfg))
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / "sae_weights.safetensors"))
    return folder


def cfg_of(**over):
    c = {"architecture": "standard", "d_in": D_IN, "d_sae": D_SAE, "dtype": "float32", "device": "cpu",
         "apply_b_dec_to_input": True, "normalize_activations": "none",
         "metadata": {"model_name": "gpt2", "hook_name": "blocks.2.hook_resid_post", "prepend_bos": True,
                      "context_size": 128, "sae_lens_version": "6.5.0"}}
    c.update(over)
    return c


# --- the SAELens reference ------------------------------------------------------------------------


class SAELensRef:
    """sae_lens/saes/sae.py + standard/topk/jumprelu/gated/transcoder encode and decode, from the files."""

    def __init__(self, folder):
        self.cfg = json.loads((folder / "cfg.json").read_text())
        self.w = {k: v.double() for k, v in load_file(str(folder / "sae_weights.safetensors")).items()}
        self.arch = self.cfg["architecture"]
        self.norm = self.cfg.get("normalize_activations", "none")

    def norm_in(self, x):
        if self.norm == "constant_norm_rescale":
            self.x_norm_coeff = (self.cfg["d_in"] ** 0.5) / x.norm(dim=-1, keepdim=True)
            return x * self.x_norm_coeff
        if self.norm == "layer_norm":
            mu = x.mean(dim=-1, keepdim=True)
            x = x - mu
            std = x.std(dim=-1, keepdim=True)
            self.ln_mu, self.ln_std = mu, std
            return x / (std + 1e-5)
        return x

    def norm_out(self, x):
        if self.norm == "constant_norm_rescale":
            return x / self.x_norm_coeff
        if self.norm == "layer_norm":
            return x * self.ln_std + self.ln_mu
        return x

    def encode(self, x):
        w, x = self.w, self.norm_in(x.double())
        if "transcoder" not in self.arch:
            x = x - w["b_dec"] * self.cfg.get("apply_b_dec_to_input", True)
        if self.arch == "gated":
            gate = (x @ w["W_enc"] + w["b_gate"]) > 0
            return gate.double() * torch.relu(x @ (w["W_enc"] * w["r_mag"].exp()) + w["b_mag"])
        pre = x @ w["W_enc"] + w["b_enc"]
        if self.arch == "topk":
            top = pre.topk(self.cfg["k"], dim=-1)
            return torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))
        if self.arch in ("jumprelu", "jumprelu_transcoder"):
            return torch.relu(pre) * (pre > w["threshold"])
        return torch.relu(pre)

    def decode(self, z):
        out = z.double() @ self.w["W_dec"] + self.w["b_dec"]
        return out if "transcoder" in self.arch else self.norm_out(out)


def coo_dense(sae, x):
    r, f, v = sae.encode_coo(x)
    out = torch.zeros(x.shape[0], sae.d_sae)
    out[r, f] = v
    return out


def check(sae, ref, x):
    """encode, encode_coo and decode equal the reference; the fixture fires some latents, not all."""
    expected = ref.encode(x)
    active = (expected > 0).double().mean().item()
    assert 0.03 < active < 0.9, active
    torch.testing.assert_close(sae.encode(x).double(), expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(coo_dense(sae, x).double(), expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(sae.decode(sae.encode(x)).double(), ref.decode(expected), atol=1e-4, rtol=1e-4)
    return expected


# --- normalisations -------------------------------------------------------------------------------


@pytest.mark.parametrize("norm", ["constant_norm_rescale", "layer_norm"])
@pytest.mark.parametrize("arch", ["standard", "topk", "jumprelu"])
def test_runtime_normalisations_match_saelens(tmp_path, norm, arch):
    w = weights(seed=2)
    over = {"k": 6} if arch == "topk" else {}
    if arch == "jumprelu":
        w["threshold"] = torch.rand(D_SAE, generator=gen(3)) * 0.6
    folder = write(tmp_path / "sae", cfg_of(architecture=arch, normalize_activations=norm, **over), w)
    sae, ref, x = load_sae(folder), SAELensRef(folder), xs()
    assert sae.cfg.normalize == norm
    z = check(sae, ref, x)
    # decode with the input given explicitly, after encoding something else in between
    sae.encode(xs(seed=9))
    torch.testing.assert_close(sae.decode(sae.encode(x), x).double(), ref.decode(z), atol=1e-4, rtol=1e-4)
    # the normalisation matters: without it the latents differ
    plain = SAELensRef(write(tmp_path / "plain", cfg_of(architecture=arch, **over), w)).encode(x)
    assert (plain - z).abs().max() > 1e-2
    # the per-token rule: a token scaled by 7 gives the same latents under constant_norm_rescale
    if norm == "constant_norm_rescale":
        torch.testing.assert_close(sae.encode(x * 7.0), sae.encode(x), atol=1e-4, rtol=1e-4)


def test_normalised_sae_round_trips_through_save_sae(tmp_path):
    w = weights(seed=4)
    folder = write(tmp_path / "sae", cfg_of(normalize_activations="layer_norm"), w)
    sae = load_sae(folder)
    out = save_sae(sae, tmp_path / "copy")
    assert json.loads((out / "cfg.json").read_text())["normalize_activations"] == "layer_norm"
    again, x = load_sae(out), xs()
    torch.testing.assert_close(again.encode(x).double(), SAELensRef(out).encode(x), atol=1e-4, rtol=1e-4)
    assert again.identity == sae.identity
    plain = load_sae(write(tmp_path / "plain", cfg_of(), w))
    assert plain.identity != sae.identity  # the normalisation is part of what the SAE computes


def test_decode_of_a_normalised_sae_needs_its_input(tmp_path):
    sae = load_sae(write(tmp_path / "sae", cfg_of(normalize_activations="constant_norm_rescale"), weights()))
    with pytest.raises(SAEError, match="needs the input it encoded"):
        sae.decode(torch.zeros(3, D_SAE))


def test_evaluate_undoes_the_normalisation(tmp_path):
    """Explained variance of a layer-norm SAE is measured in the input's own space, as SAELens reconstructs."""
    folder = write(tmp_path / "sae", cfg_of(normalize_activations="layer_norm"), weights(seed=5))
    sae, ref, x = load_sae(folder), SAELensRef(folder), xs(n=200)
    q = evaluate_sae(sae, [x])
    recon = ref.decode(ref.encode(x))
    fvu = ((x.double() - recon) ** 2).sum() / ((x.double() - x.double().mean(0)) ** 2).sum()
    assert q.fvu == pytest.approx(fvu.item(), rel=1e-4)


# --- gated ----------------------------------------------------------------------------------------


def gated_weights(seed=6):
    w = weights(seed)
    g = gen(seed + 100)
    b_enc = w.pop("b_enc")
    return {**w, "b_gate": b_enc, "r_mag": torch.randn(D_SAE, generator=g) * 0.5,
            "b_mag": torch.randn(D_SAE, generator=g) * 0.3}


@pytest.mark.parametrize("apply_b_dec", [True, False])
def test_gated_matches_saelens(tmp_path, apply_b_dec):
    folder = write(tmp_path / "sae", cfg_of(architecture="gated", apply_b_dec_to_input=apply_b_dec), gated_weights())
    sae, ref, x = load_sae(folder), SAELensRef(folder), xs()
    z = check(sae, ref, x)
    assert sae.cfg.architecture == "gated"
    # the gate really decides: some latents have a positive magnitude but a closed gate
    xin = x.double() - ref.w["b_dec"] * apply_b_dec
    mag = xin @ (ref.w["W_enc"] * ref.w["r_mag"].exp()) + ref.w["b_mag"]
    assert ((mag > 0) & (z == 0)).any()
    out = save_sae(sae, tmp_path / "copy")  # SAELens reads what saeembed writes the same
    assert set(load_file(str(out / "sae_weights.safetensors"))) == {"W_enc", "b_gate", "r_mag", "b_mag", "W_dec", "b_dec"}
    torch.testing.assert_close(SAELensRef(out).encode(x), z, atol=1e-4, rtol=1e-4)
    assert load_sae(out).identity == sae.identity


def test_gated_with_input_scale_folds_into_both_paths(tmp_path):
    from dataclasses import replace

    from saeembed.sae import SAE

    base = load_sae(write(tmp_path / "sae", cfg_of(architecture="gated"), gated_weights(seed=7)))
    scaled = SAE(replace(base.cfg, input_scale=0.25, output_scale=3.0), base.W_enc, base.b_enc, base.W_dec,
                 base.b_dec, r_mag=base.r_mag, b_mag=base.b_mag)
    out = save_sae(scaled, tmp_path / "copy")
    x = xs(scale=8.0)
    torch.testing.assert_close(SAELensRef(out).encode(x).float(), scaled.encode(x), atol=1e-4, rtol=1e-4)


# --- transcoders ----------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["transcoder", "skip_transcoder", "jumprelu_transcoder"])
def test_saelens_transcoders_read_their_input_hook(tmp_path, arch):
    w = weights(seed=8, d_out=D_OUT)
    if arch == "jumprelu_transcoder":
        w["threshold"] = torch.rand(D_SAE, generator=gen(9)) * 0.5
    if arch == "skip_transcoder":
        w["W_skip"] = torch.randn(D_OUT, D_IN, generator=gen(10))
    cfg = cfg_of(architecture=arch, d_out=D_OUT, hook_name_out="blocks.2.hook_mlp_out",
                 metadata={"model_name": "gpt2", "hook_name": "blocks.2.ln2.hook_normalized"},
                 model_from_pretrained_kwargs={"fold_ln": False})
    folder = write(tmp_path / "tc", cfg, w)
    sae, ref, x = load_sae(folder), SAELensRef(folder), xs()
    check(sae, ref, x)  # apply_b_dec_to_input=True in the file, yet b_dec is never subtracted
    assert sae.decode(sae.encode(x)).shape == (x.shape[0], D_OUT)
    info = describe_sae(sae)
    assert (info["transcoder"], info["hook"], info["hook_out"], info["d_out"]) == (True, "layers.2.ln2", "layers.2.mlp_out", D_OUT)
    with pytest.raises(SAEError, match="transcoder"):
        evaluate_sae(sae, [x])
    if arch != "skip_transcoder":  # written back, SAELens reads the same latents
        out = save_sae(sae, tmp_path / "copy")
        written = json.loads((out / "cfg.json").read_text())
        assert (written["architecture"], written["d_out"], written["hook_name_out"]) == (arch, D_OUT, "blocks.2.hook_mlp_out")
        torch.testing.assert_close(SAELensRef(out).encode(x), ref.encode(x), atol=1e-4, rtol=1e-4)


def write_sparsify_transcoder(folder, skip=False, seed=11):
    g = gen(seed)
    t = {"encoder.weight": torch.randn(D_SAE, D_IN, generator=g) * 0.4, "encoder.bias": torch.randn(D_SAE, generator=g) * 0.3,
         "W_dec": torch.randn(D_SAE, D_IN, generator=g) * 0.4, "b_dec": torch.randn(D_IN, generator=g) * 2.0}
    if skip:
        t["W_skip"] = torch.randn(D_IN, D_IN, generator=g)
    folder.mkdir(parents=True)
    (folder / "cfg.json").write_text(json.dumps({"activation": "topk", "k": 5, "num_latents": D_SAE, "d_in": D_IN,
                                                 "transcode": True, "skip_connection": skip}))
    save_file(t, str(folder / "sae.safetensors"))
    return t


@pytest.mark.parametrize(("name", "reads", "writes"), [("layers.3.mlp", "layers.3.ln2", "layers.3.mlp_out"),
                                                       ("layers.4", "layers.4.pre", "layers.4")])
def test_sparsify_transcoder_reads_the_module_input(tmp_path, name, reads, writes):
    t = write_sparsify_transcoder(tmp_path / name, skip=True)
    sae, x = load_sae(tmp_path / name), xs()
    pre = torch.relu(x.double() @ t["encoder.weight"].double().T + t["encoder.bias"].double())  # no b_dec
    top = pre.topk(5, dim=-1)
    expected = torch.zeros_like(pre).scatter(-1, top.indices, top.values)
    torch.testing.assert_close(coo_dense(sae, x).double(), expected, atol=1e-4, rtol=1e-4)
    assert (sae.cfg.hook, sae.cfg.hook_out, sae.cfg.extra.get("skip_connection")) == (reads, writes, True)


# --- files that cannot be read: one line ----------------------------------------------------------


@pytest.mark.parametrize(("over", "drop", "match"), [
    ({"architecture": "gated"}, "r_mag", r"lacks tensor\(s\) r_mag"),
    ({"architecture": "jumprelu"}, "threshold", "lacks the JumpReLU tensor 'threshold'"),
    ({"normalize_activations": "rms"}, None, "normalize_activations='rms'.*it reads none, expected_average_only_in"),
    ({"architecture": "skip_transcoder", "d_out": D_OUT}, None, "shape"),  # W_dec of the input's width
])
def test_unreadable_files_say_why_in_one_line(tmp_path, capsys, monkeypatch, over, drop, match):
    import sys

    from saeembed.cli.app import main

    w = gated_weights() if over.get("architecture") == "gated" else weights()
    w.pop(drop, None)
    folder = write(tmp_path / "sae", cfg_of(**over), w)
    with pytest.raises(SAEError, match=match):
        load_sae(folder)
    monkeypatch.setattr(sys, "argv", ["saeembed", "sae", "info", str(folder)])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err.strip()
    assert e.value.code != 0 and "Traceback" not in err and len(err.splitlines()) <= 3
