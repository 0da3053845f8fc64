"""Each loader against a fixture written in that exact public layout, with the expected latents
computed here independently (numpy, float64) from the same raw arrays."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from saeembed.errors import SAEError
from saeembed.sae import SAE, SAEConfig, detect_format, load_sae, save_sae

D_IN, D_SAE = 16, 64


# --- helpers ------------------------------------------------------------------------------


def rng(seed=0):
    return np.random.default_rng(seed)


def raw_weights(seed=0, *, threshold=False):
    """SAELens-oriented random weights: W_enc [d_in, d_sae], W_dec [d_sae, d_in]."""
    r = rng(seed)
    w = {
        "W_enc": r.normal(0, 0.4, (D_IN, D_SAE)).astype(np.float32),
        "b_enc": r.normal(-0.1, 0.3, D_SAE).astype(np.float32),
        "W_dec": r.normal(0, 0.4, (D_SAE, D_IN)).astype(np.float32),
        "b_dec": r.normal(0, 0.8, D_IN).astype(np.float32),  # large enough that subtracting it matters
    }
    if threshold:
        w["threshold"] = r.uniform(0.2, 0.9, D_SAE).astype(np.float32)
    return w


def inputs(n=40, seed=1, scale=1.0):
    return (rng(seed).normal(0, 1, (n, D_IN)) * scale).astype(np.float32)


def relu(a):
    return np.maximum(a, 0)


def topk(pre, k):
    out = np.zeros_like(pre)
    idx = np.argsort(-pre, axis=1)[:, :k]
    rows = np.arange(pre.shape[0])[:, None]
    out[rows, idx] = relu(pre[rows, idx])
    return out


def t(a):
    return torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32)


def coo_dense(sae, x):
    r, f, v = sae.encode_coo(x)
    out = torch.zeros(x.shape[0], sae.d_sae)
    out[r, f] = v
    return out


def assert_latents(sae, x, expected):
    """encode and encode_coo both equal the independent latents, which are neither all on nor all off."""
    x, expected = t(x), t(expected)
    active = (expected > 0).float().mean().item()
    assert 0.03 < active < 0.9, f"fixture gives a useless active fraction {active:.2f}"
    torch.testing.assert_close(sae.encode(x), expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(coo_dense(sae, x), expected, atol=1e-4, rtol=1e-4)


def assert_decode(sae, z, expected):
    torch.testing.assert_close(sae.decode(t(z)), t(expected), atol=1e-4, rtol=1e-4)


def write_saelens(folder, cfg, weights):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cfg.json").write_text(json.dumps(cfg))
    save_file({k: t(v) for k, v in weights.items()}, str(folder / "sae_weights.safetensors"))
    return folder


def saelens_cfg(**over):
    cfg = {
        "architecture": "standard",
        "d_in": D_IN,
        "d_sae": D_SAE,
        "dtype": "float32",
        "device": "cpu",
        "model_name": "gpt2-small",
        "hook_name": "blocks.3.hook_resid_post",
        "hook_layer": 3,
        "normalize_activations": "none",
    }
    cfg.update(over)
    return cfg


def write_sparsify(folder, seed=0, k=6, **cfg_over):
    """sparsify layout: encoder.weight [d_sae, d_in], W_dec [d_sae, d_in]."""
    r = rng(seed)
    w = {
        "encoder.weight": r.normal(0, 0.4, (D_SAE, D_IN)).astype(np.float32),
        "encoder.bias": r.normal(0, 0.3, D_SAE).astype(np.float32),
        "W_dec": r.normal(0, 0.4, (D_SAE, D_IN)).astype(np.float32),
        "b_dec": r.normal(0, 0.8, D_IN).astype(np.float32),
    }
    cfg = {"activation": "topk", "expansion_factor": 4, "normalize_decoder": True, "num_latents": D_SAE,
           "k": k, "multi_topk": False, "skip_connection": False, "transcode": False, "d_in": D_IN}
    cfg.update(cfg_over)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cfg.json").write_text(json.dumps(cfg))
    save_file({n: t(v) for n, v in w.items()}, str(folder / "sae.safetensors"))
    return w


def sparsify_expected(w, x, k):
    pre = relu((x - w["b_dec"]) @ w["encoder.weight"].T.astype(np.float64) + w["encoder.bias"])
    return topk(pre, k)


# --- SAELens ------------------------------------------------------------------------------


@pytest.mark.parametrize("apply_b_dec", [True, False])
def test_saelens_standard(tmp_path, apply_b_dec):
    w = raw_weights()
    cfg = saelens_cfg(apply_b_dec_to_input=apply_b_dec)
    folder = write_saelens(tmp_path / "sae", cfg, w)
    x = inputs()

    sae = load_sae(folder)

    pre = (x - w["b_dec"] * apply_b_dec) @ w["W_enc"].astype(np.float64) + w["b_enc"]
    z = relu(pre)
    assert_latents(sae, x, z)
    assert_decode(sae, z, z @ w["W_dec"] + w["b_dec"])
    other = relu((x - w["b_dec"] * (not apply_b_dec)) @ w["W_enc"] + w["b_enc"])
    assert not np.allclose(z, other, atol=1e-3)  # the flag really changes the latents
    assert detect_format(folder) == "saelens"
    c = sae.cfg
    assert (c.architecture, c.k, c.hook, c.model, c.format) == ("relu", None, "layers.3", "gpt2-small", "saelens")
    assert c.source == str(folder) and c.extra["raw_cfg"] == cfg


def test_saelens_missing_apply_b_dec_defaults_to_true(tmp_path):
    w = raw_weights()
    folder = write_saelens(tmp_path / "sae", saelens_cfg(), w)  # older configs leave the key out
    assert load_sae(folder).cfg.apply_b_dec_to_input is True


def test_saelens_topk_old_activation_fn_str(tmp_path):
    w = raw_weights(seed=2)
    cfg = saelens_cfg(activation_fn_str="topk", activation_fn_kwargs={"k": 5}, apply_b_dec_to_input=True)
    sae = load_sae(write_saelens(tmp_path / "sae", cfg, w))
    x = inputs()
    z = topk((x - w["b_dec"]) @ w["W_enc"].astype(np.float64) + w["b_enc"], 5)
    assert (sae.cfg.architecture, sae.cfg.k) == ("topk", 5)
    assert_latents(sae, x, z)
    assert_decode(sae, z, z @ w["W_dec"] + w["b_dec"])


def test_saelens_topk_new_architecture_and_meta(tmp_path):
    w = raw_weights(seed=3)
    cfg = {"architecture": "topk", "d_in": D_IN, "d_sae": D_SAE, "k": 7, "dtype": "float32",
           "apply_b_dec_to_input": False, "normalize_activations": "none",
           "meta": {"model_name": "pythia-70m", "hook_name": "blocks.2.hook_resid_pre"}}
    sae = load_sae(write_saelens(tmp_path / "sae", cfg, w))
    x = inputs()
    assert_latents(sae, x, topk(x @ w["W_enc"].astype(np.float64) + w["b_enc"], 7))
    assert (sae.cfg.k, sae.cfg.hook, sae.cfg.model) == (7, "layers.2.pre", "pythia-70m")


@pytest.mark.parametrize("stored", ["threshold", "log_threshold"])
def test_saelens_jumprelu(tmp_path, stored):
    w = raw_weights(seed=4, threshold=True)
    thr = w["threshold"]
    if stored == "log_threshold":  # SAELens training checkpoints keep the log
        w["log_threshold"] = np.log(w.pop("threshold"))
    cfg = saelens_cfg(architecture="jumprelu", apply_b_dec_to_input=False)
    sae = load_sae(write_saelens(tmp_path / "sae", cfg, w))
    x = inputs()
    pre = x @ w["W_enc"].astype(np.float64) + w["b_enc"]
    z = np.where(pre > thr, relu(pre), 0)
    assert ((pre > 0) & (z == 0)).any(), "no latent sits between 0 and its threshold"
    assert sae.cfg.architecture == "jumprelu"
    assert_latents(sae, x, z)
    assert_decode(sae, z, z @ w["W_dec"] + w["b_dec"])


def test_saelens_batchtopk_reads_as_jumprelu(tmp_path):
    w = raw_weights(seed=5, threshold=True)
    cfg = saelens_cfg(architecture="batchtopk", apply_b_dec_to_input=True, k=8)
    sae = load_sae(write_saelens(tmp_path / "sae", cfg, w))
    x = inputs()
    pre = (x - w["b_dec"]) @ w["W_enc"].astype(np.float64) + w["b_enc"]
    assert sae.cfg.architecture == "jumprelu"
    assert_latents(sae, x, np.where(pre > w["threshold"], pre, 0))


def test_saelens_normalize_activations_scaling_factor(tmp_path):
    w = raw_weights(seed=6)
    cfg = saelens_cfg(normalize_activations="expected_average_only_in", apply_b_dec_to_input=True)
    folder = write_saelens(tmp_path / "no_factor", cfg, w)
    with pytest.raises(SAEError, match="scaled by a dataset-wide factor"):
        load_sae(folder)

    cfg["norm_scaling_factor"] = 2.5
    sae = load_sae(write_saelens(tmp_path / "factor", cfg, w))
    x = inputs()
    z = relu((x * 2.5 - w["b_dec"]) @ w["W_enc"].astype(np.float64) + w["b_enc"])
    assert_latents(sae, x, z)
    assert_decode(sae, z, (z @ w["W_dec"] + w["b_dec"]) / 2.5)


def test_saelens_rescale_acts_by_decoder_norm(tmp_path):
    w = raw_weights(seed=7)
    cfg = saelens_cfg(architecture="topk", k=6, apply_b_dec_to_input=False, rescale_acts_by_decoder_norm=True)
    sae = load_sae(write_saelens(tmp_path / "sae", cfg, w))
    x = inputs()
    norms = np.linalg.norm(w["W_dec"].astype(np.float64), axis=1)
    z = topk((x @ w["W_enc"].astype(np.float64) + w["b_enc"]) * norms, 6)
    assert_latents(sae, x, z)
    assert_decode(sae, z, z @ (w["W_dec"] / norms[:, None]) + w["b_dec"])


@pytest.mark.parametrize(
    ("over", "match"),
    [({"architecture": "matryoshka_batchtopk"}, "architecture 'matryoshka_batchtopk'"),
     ({"architecture": "gated"}, "lacks tensor.*b_gate, r_mag, b_mag"),  # gated without its gate tensors
     ({"activation_fn_str": "tanh-relu"}, "activation function 'tanh-relu'"),
     ({"architecture": "topk"}, "does not say its k"),
     ({"normalize_activations": "rms_norm"}, "normalize_activations='rms_norm'")],
)
def test_saelens_unsupported_configs(tmp_path, over, match):
    folder = write_saelens(tmp_path / "sae", saelens_cfg(**over), raw_weights())
    with pytest.raises(SAEError, match=match):
        load_sae(folder)


# --- sparsify -----------------------------------------------------------------------------


def test_sparsify(tmp_path):
    root = tmp_path / "run"
    w = write_sparsify(root / "layers.3", k=6)
    (root / "config.json").write_text(json.dumps({"model": "EleutherAI/pythia-70m", "batch_size": 8}))
    x = inputs()
    z = sparsify_expected(w, x, 6)

    for source in (root / "layers.3", root):  # the hook folder, or the run folder holding only it
        sae = load_sae(source)
        assert_latents(sae, x, z)
        assert_decode(sae, z, z @ w["W_dec"] + w["b_dec"])
        c = sae.cfg
        assert (c.architecture, c.k, c.apply_b_dec_to_input) == ("topk", 6, True)
        assert (c.hook, c.model, c.format) == ("layers.3", "EleutherAI/pythia-70m", "sparsify")
        assert c.source == str(root / "layers.3")
    assert detect_format(root / "layers.3") == "sparsify"
    assert (sae.encode(t(x)) > 0).sum(1).max().item() == 6


def test_sparsify_d_sae_from_expansion_factor(tmp_path):
    w = write_sparsify(tmp_path / "layers.1", num_latents=0, expansion_factor=4, d_in=D_IN, k=3)
    sae = load_sae(tmp_path / "layers.1")
    assert sae.d_sae == D_SAE
    assert_latents(sae, inputs(), sparsify_expected(w, inputs(), 3))


def test_sparsify_several_hookpoints(tmp_path):
    root = tmp_path / "run"
    w3 = write_sparsify(root / "layers.3", seed=3, k=4)
    w5 = write_sparsify(root / "layers.5", seed=5, k=4)
    x = inputs()

    with pytest.raises(SAEError, match=r"several hook points \(layers\.3, layers\.5\)"):
        load_sae(root)
    sae5 = load_sae(root, hookpoint="layers.5")
    assert sae5.cfg.hook == "layers.5" and sae5.cfg.source == f"{root}/layers.5"
    assert_latents(sae5, x, sparsify_expected(w5, x, 4))
    # TransformerLens spelling finds the same folder
    sae3 = load_sae(root, hookpoint="blocks.3.hook_resid_post")
    assert_latents(sae3, x, sparsify_expected(w3, x, 4))
    with pytest.raises(SAEError, match=r"no SAE for hook point 'layers\.9'; available: layers\.3, layers\.5"):
        load_sae(root, hookpoint="layers.9")


def test_sparsify_skip_connection_refused(tmp_path):
    folder = tmp_path / "layers.2"
    write_sparsify(folder)
    from safetensors.torch import load_file

    tensors = load_file(str(folder / "sae.safetensors"))
    tensors["W_skip"] = torch.zeros(D_IN, D_IN)
    save_file(tensors, str(folder / "sae.safetensors"))
    with pytest.raises(SAEError, match="skip connection"):
        load_sae(folder)


# --- Gemma Scope --------------------------------------------------------------------------


def test_gemmascope(tmp_path):
    w = raw_weights(seed=8, threshold=True)
    folder = tmp_path / "gemma-scope-2b-pt-res" / "layer_7" / "width_16k" / "average_l0_20"
    folder.mkdir(parents=True)
    np.savez(folder / "params.npz", **w)
    x = inputs()

    sae = load_sae(folder)

    pre = x @ w["W_enc"].astype(np.float64) + w["b_enc"]  # no b_dec subtraction
    z = np.where(pre > w["threshold"], pre, 0)
    assert ((pre > 0) & (z == 0)).any()
    assert_latents(sae, x, z)
    assert_decode(sae, z, z @ w["W_dec"] + w["b_dec"])
    c = sae.cfg
    assert (c.architecture, c.apply_b_dec_to_input, c.format) == ("jumprelu", False, "gemmascope")
    assert (c.hook, c.model) == ("layers.7", "google/gemma-2-2b")
    assert detect_format(folder) == "gemmascope" and detect_format(folder / "params.npz") == "gemmascope"


def test_gemmascope_non_residual_has_no_hook(tmp_path):
    folder = tmp_path / "gemma-scope-9b-it-mlp" / "layer_3" / "width_16k" / "average_l0_9"
    folder.mkdir(parents=True)
    np.savez(folder / "params.npz", **raw_weights(threshold=True))
    sae = load_sae(folder)
    assert sae.cfg.hook is None and sae.cfg.model == "google/gemma-2-9b-it"


# --- Goodfire -----------------------------------------------------------------------------


def write_goodfire(folder, seed=9):
    r = rng(seed)
    sd = {  # Goodfire layout: nn.Linear weights, decoder_linear.weight is [d_in, d_sae]
        "encoder_linear.weight": t(r.normal(0, 0.4, (D_SAE, D_IN))),
        "encoder_linear.bias": t(r.normal(-0.1, 0.3, D_SAE)),
        "decoder_linear.weight": t(r.normal(0, 0.4, (D_IN, D_SAE))),
        "decoder_linear.bias": t(r.normal(0, 0.8, D_IN)),
    }
    folder.mkdir(parents=True, exist_ok=True)
    file = folder / "Llama-3.1-8B-Instruct-SAE-l19.pth"
    torch.save(sd, file)
    return file, {k: v.numpy().astype(np.float64) for k, v in sd.items()}


def test_goodfire(tmp_path):
    file, w = write_goodfire(tmp_path / "goodfire")
    x = inputs()
    z = relu(x @ w["encoder_linear.weight"].T + w["encoder_linear.bias"])  # no b_dec subtraction
    for source in (file, file.parent):
        sae = load_sae(source)
        assert_latents(sae, x, z)
        assert_decode(sae, z, z @ w["decoder_linear.weight"].T + w["decoder_linear.bias"])
        c = sae.cfg
        assert (c.architecture, c.apply_b_dec_to_input, c.format) == ("relu", False, "goodfire")
        assert (c.hook, c.model) == ("layers.19", "meta-llama/Llama-3.1-8B-Instruct")
    assert detect_format(file) == "goodfire"


class NotATensor:
    pass


def test_goodfire_refuses_pickled_objects(tmp_path):
    file = tmp_path / "evil.pth"
    torch.save({"encoder_linear.weight": NotATensor()}, file)
    with pytest.raises(SAEError, match="cannot read .*evil.pth as a plain tensor dict"):
        load_sae(file)


def test_goodfire_missing_keys(tmp_path):
    file = tmp_path / "sae.pth"
    torch.save({"encoder.weight": torch.zeros(D_SAE, D_IN)}, file)
    with pytest.raises(SAEError, match="lacks tensor.*encoder_linear.weight.*holds encoder.weight"):
        load_sae(file)


# --- Llama Scope --------------------------------------------------------------------------


def write_llamascope(folder, seed=10, **hp_over):
    r = rng(seed)
    w = {  # lm-saes layout: encoder.weight [d_sae, d_in], decoder.weight [d_in, d_sae]
        "encoder.weight": r.normal(0, 0.4, (D_SAE, D_IN)).astype(np.float32),
        "encoder.bias": r.normal(-0.1, 0.3, D_SAE).astype(np.float32),
        # decoder columns deliberately far from unit norm, so a decoder-norm mistake shows
        "decoder.weight": (r.normal(0, 0.4, (D_IN, D_SAE)) * r.uniform(0.5, 2.0, D_SAE)).astype(np.float32),
        "decoder.bias": r.normal(0, 0.8, D_IN).astype(np.float32),
    }
    hp = {"d_model": D_IN, "d_sae": D_SAE, "expansion_factor": 4,
          "hook_point_in": "blocks.5.hook_resid_post", "hook_point_out": "blocks.5.hook_resid_post",
          "act_fn": "jumprelu", "jump_relu_threshold": 0.35, "top_k": 50,
          "norm_activation": "dataset-wise", "dataset_average_activation_norm": {"in": 6.0, "out": 6.0},
          "use_decoder_bias": True, "apply_decoder_bias_to_pre_encoder": False,
          "sparsity_include_decoder_norm": False}
    hp.update(hp_over)
    (folder / "checkpoints").mkdir(parents=True, exist_ok=True)
    (folder / "hyperparams.json").write_text(json.dumps(hp))
    save_file({k: t(v) for k, v in w.items()}, str(folder / "checkpoints" / "final.safetensors"))
    return {k: v.astype(np.float64) for k, v in w.items()}


@pytest.mark.parametrize("include_decoder_norm", [False, True])
def test_llamascope(tmp_path, include_decoder_norm):
    folder = tmp_path / "Llama3_1-8B-Base-L5R-8x"
    w = write_llamascope(folder, sparsity_include_decoder_norm=include_decoder_norm)
    x = inputs(scale=6.0 / 4.0)  # norms near the dataset average of 6

    sae = load_sae(folder)

    # lm-saes: scale input to norm sqrt(d_model), encode, gate (pre x decoder norm) at the scalar
    # threshold; at inference the decoder norm is folded into the latents
    xs = x * math.sqrt(D_IN) / 6.0
    pre = xs @ w["encoder.weight"].T + w["encoder.bias"]
    norm = np.linalg.norm(w["decoder.weight"], axis=0) if include_decoder_norm else np.ones(D_SAE)
    scores = pre * norm
    z = np.where(scores > 0.35, scores, 0)
    assert ((scores > 0) & (z == 0)).any()
    assert_latents(sae, x, z)
    recon = (z @ (w["decoder.weight"] / norm).T + w["decoder.bias"]) * 6.0 / math.sqrt(D_IN)
    assert_decode(sae, z, recon)
    c = sae.cfg
    assert (c.architecture, c.format, c.hook) == ("jumprelu", "llamascope", "layers.5")
    assert c.model == "meta-llama/Llama-3.1-8B"
    assert c.input_scale == pytest.approx(4.0 / 6.0) and c.output_scale == pytest.approx(6.0 / 4.0)
    assert detect_format(folder) == "llamascope"


def test_llamascope_topk_and_separate_out_norm(tmp_path):
    folder = tmp_path / "L2M"
    w = write_llamascope(folder, act_fn="topk", top_k=5, hook_point_out="blocks.2.hook_mlp_out",
                         hook_point_in="blocks.2.hook_resid_post",
                         dataset_average_activation_norm={"in": 8.0, "out": 2.0})
    sae = load_sae(folder)
    x = inputs(scale=2.0)
    z = topk(x * 4.0 / 8.0 @ w["encoder.weight"].T + w["encoder.bias"], 5)
    assert (sae.cfg.architecture, sae.cfg.k) == ("topk", 5)
    assert sae.cfg.extra.get("transcoder") is True
    assert_latents(sae, x, z)
    assert_decode(sae, z, (z @ w["decoder.weight"].T + w["decoder.bias"]) * 2.0 / 4.0)


# --- save_sae round trip ------------------------------------------------------------------


def built_sae(architecture, **cfg_over):
    w = raw_weights(seed=11, threshold=architecture == "jumprelu")
    cfg = SAEConfig(D_IN, D_SAE, architecture, k=5 if architecture == "topk" else None,
                    apply_b_dec_to_input=True, hook="layers.4", model="gpt2", **cfg_over)
    return SAE(cfg, t(w["W_enc"]), t(w["b_enc"]), t(w["W_dec"]), t(w["b_dec"]),
               t(w["threshold"]) if "threshold" in w else None)


@pytest.mark.parametrize("architecture", ["relu", "topk", "jumprelu"])
def test_save_round_trip(tmp_path, architecture):
    sae = built_sae(architecture)
    sae.cfg.prepend_bos, sae.cfg.context_size = False, 128
    card = {"trained_on": "tiny corpus", "fvu": 0.2}
    out = save_sae(sae, tmp_path / "saved", model_card=card)

    cfg = json.loads((out / "cfg.json").read_text())
    assert cfg["architecture"] == {"relu": "standard"}.get(architecture, architecture)
    assert cfg["hook_name"] == "blocks.4.hook_resid_post" and cfg["model_name"] == "gpt2"
    assert (cfg["prepend_bos"], cfg["context_size"], cfg["dtype"]) == (False, 128, "float32")
    assert cfg["saeembed"]["model_card"] == card

    back = load_sae(out)
    x = t(inputs())
    assert back.identity == sae.identity
    assert torch.equal(back.encode(x), sae.encode(x))
    assert torch.equal(back.decode(sae.encode(x)), sae.decode(sae.encode(x)))
    c = back.cfg
    assert (c.architecture, c.k, c.apply_b_dec_to_input) == (architecture, sae.cfg.k, True)
    assert (c.input_scale, c.output_scale, c.hook, c.model) == (1.0, None, "layers.4", "gpt2")
    assert (c.prepend_bos, c.context_size) == (False, 128)
    assert c.format == "saelens" and c.extra["model_card"] == card


@pytest.mark.parametrize("architecture", ["relu", "topk", "jumprelu"])
@pytest.mark.parametrize("scales", [(0.7, None), (0.7, 1.3)])
def test_save_folds_input_and_output_scales(tmp_path, architecture, scales):
    sae = built_sae(architecture, input_scale=scales[0], output_scale=scales[1])
    out = save_sae(sae, tmp_path / "saved")
    cfg = json.loads((out / "cfg.json").read_text())
    assert cfg["normalize_activations"] == "none" and "norm_scaling_factor" not in cfg
    # with output = 1 / input SAELens's own fold keeps b_dec on the input; otherwise it moves into b_enc
    assert cfg["apply_b_dec_to_input"] is (scales[1] is None)
    back = load_sae(out)
    assert (back.cfg.input_scale, back.cfg.output_scale) == (1.0, None)
    x = t(inputs())
    z = sae.encode(x)
    torch.testing.assert_close(back.encode(x), z, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(back.decode(z), sae.decode(z), atol=1e-5, rtol=1e-5)


def test_save_round_trip_of_a_loaded_format(tmp_path):
    write_llamascope(tmp_path / "ls")
    sae = load_sae(tmp_path / "ls")
    back = load_sae(save_sae(sae, tmp_path / "saved"))
    x = t(inputs(scale=1.5))
    torch.testing.assert_close(coo_dense(back, x), coo_dense(sae, x), atol=1e-5, rtol=1e-5)
    assert back.cfg.extra["origin"]["format"] == "llamascope"


def test_save_fp16(tmp_path):
    sae = built_sae("relu")
    full = save_sae(sae, tmp_path / "fp32")
    half = save_sae(sae, tmp_path / "fp16", dtype=torch.float16)
    size = lambda d: (d / "sae_weights.safetensors").stat().st_size  # noqa: E731
    assert size(half) < 0.6 * size(full)
    # SAELens casts stored tensors to the config's dtype: float32, so it computes in float32
    assert json.loads((half / "cfg.json").read_text())["dtype"] == "float32"
    back = load_sae(half)
    x = t(inputs())
    torch.testing.assert_close(back.encode(x), sae.encode(x), atol=2e-2, rtol=1e-2)
    assert back.identity != sae.identity  # rounded weights are other weights


# --- errors -------------------------------------------------------------------------------


def test_missing_weights_file(tmp_path):
    folder = tmp_path / "sae"
    folder.mkdir()
    (folder / "cfg.json").write_text(json.dumps(saelens_cfg()))
    with pytest.raises(SAEError, match=r"SAELens SAE folder .* lacks sae_weights.safetensors; it holds: cfg.json"):
        load_sae(folder)

    ls = tmp_path / "llamascope"
    write_llamascope(ls)
    (ls / "checkpoints" / "final.safetensors").unlink()
    with pytest.raises(SAEError, match=r"lacks checkpoints/final.safetensors or .*: checkpoints/, hyperparams.json"):
        load_sae(ls)


def test_wrong_shape(tmp_path):
    w = raw_weights()
    w["W_enc"] = w["W_enc"][:, :63]
    with pytest.raises(SAEError, match=r"W_enc has shape \(16, 63\), expected \(16, 64\)"):
        load_sae(write_saelens(tmp_path / "sae", saelens_cfg(), w))


def test_missing_tensor(tmp_path):
    w = raw_weights()
    del w["b_enc"]
    with pytest.raises(SAEError, match=r"lacks tensor\(s\) b_enc; it holds W_dec, W_enc, b_dec"):
        load_sae(write_saelens(tmp_path / "sae", saelens_cfg(), w))


def test_unrecognized_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(SAEError, match=r"not an SAE in a format saeembed reads \(SAELens .*sparsify.*Gemma Scope.*"
                                       r"Goodfire.*Llama Scope.*\); it holds: notes.txt"):
        load_sae(tmp_path)
    with pytest.raises(SAEError, match="not an SAE"):
        detect_format(tmp_path)


def test_hookpoint_that_does_not_match_the_sae(tmp_path):
    folder = write_saelens(tmp_path / "sae", saelens_cfg(), raw_weights())
    with pytest.raises(SAEError, match="reads hook point layers.3, not the requested layers.5"):
        load_sae(folder, hookpoint="layers.5")


def test_nonexistent_local_path(tmp_path):
    with pytest.raises(SAEError, match="neither an existing file or folder nor a hub id"):
        load_sae(tmp_path / "nope")


def test_hub_id_offline(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)  # read once at import, so patch it too
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    with pytest.raises(SAEError) as err:
        load_sae("saeembed-test/no-such-sae-repo/layer_3")
    msg = str(err.value)
    assert "'saeembed-test/no-such-sae-repo/layer_3'" in msg and "offline" in msg and "\n" not in msg


@pytest.mark.parametrize(
    ("source", "repo", "patterns"),
    [("org/gemma-scope-2b-pt-res/layer_7/width_16k/average_l0_20", "org/gemma-scope-2b-pt-res",
      ["layer_7/width_16k/average_l0_20", "layer_7/width_16k/average_l0_20/*"]),
     ("org/gemma-scope-2b-pt-res:layer_7/width_16k/average_l0_20", "org/gemma-scope-2b-pt-res",
      ["layer_7/width_16k/average_l0_20", "layer_7/width_16k/average_l0_20/*"])],
)
def test_hub_id_with_subfolder(tmp_path, monkeypatch, source, repo, patterns):
    """A hub id downloads only the subfolder, then loads like a local folder."""
    import huggingface_hub

    w = raw_weights(seed=8, threshold=True)
    snapshot = tmp_path / "snapshot"
    (snapshot / "layer_7" / "width_16k" / "average_l0_20").mkdir(parents=True)
    np.savez(snapshot / "layer_7" / "width_16k" / "average_l0_20" / "params.npz", **w)
    calls = []

    def fake_snapshot_download(repo_id, allow_patterns=None, **kw):
        calls.append((repo_id, allow_patterns))
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    sae = load_sae(source)
    assert calls == [(repo, patterns)]
    assert (sae.cfg.format, sae.cfg.source, sae.cfg.hook, sae.cfg.model) == (
        "gemmascope", source, "layers.7", "google/gemma-2-2b")


def test_hub_id_with_hookpoint(tmp_path, monkeypatch):
    import huggingface_hub

    snapshot = tmp_path / "snapshot"
    w = write_sparsify(snapshot / "layers.5", k=4)
    calls = []

    def fake_snapshot_download(repo_id, allow_patterns=None, **kw):
        calls.append((repo_id, allow_patterns))
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    sae = load_sae("EleutherAI/sae-tiny", hookpoint="layers.5")
    assert calls == [("EleutherAI/sae-tiny", ["layers.5/*", "*.layers.5/*"])]
    assert sae.cfg.source == "EleutherAI/sae-tiny/layers.5"
    assert_latents(sae, inputs(), sparsify_expected(w, inputs(), 4))


# --- hostile files: one clear line, never a traceback or a silent empty encode ----------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("tensor", ["W_enc", "b_dec"])
def test_nan_or_inf_weights_are_refused(tmp_path, bad, tensor):
    w = raw_weights()
    w[tensor].flat[3] = bad
    folder = write_saelens(tmp_path / "sae", saelens_cfg(), w)
    with pytest.raises(SAEError, match=f"NaN or infinite.*{tensor}"):
        load_sae(folder)


@pytest.mark.parametrize("over", [{"d_in": "abc"}, {"d_sae": [1, 2]}, {"d_in": {"x": 1}}, {"k": "many", "architecture": "topk"}])
def test_malformed_config_values_are_one_clear_error(tmp_path, over):
    folder = write_saelens(tmp_path / "sae", saelens_cfg(**over), raw_weights())
    with pytest.raises(SAEError):
        load_sae(folder)


def test_deeply_nested_config_is_one_clear_error(tmp_path):
    folder = write_saelens(tmp_path / "sae", saelens_cfg(), raw_weights())
    (folder / "cfg.json").write_text('{"d_in": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(SAEError):
        load_sae(folder)


def test_string_in_place_of_a_tensor_is_one_clear_error(tmp_path):
    file, _ = write_goodfire(tmp_path / "goodfire")
    sd = torch.load(file)
    sd["encoder_linear.weight"] = "not a tensor"
    torch.save(sd, file)
    with pytest.raises(SAEError):
        load_sae(file)
