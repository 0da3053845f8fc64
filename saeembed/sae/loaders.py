"""One loader per public SAE weight format (see formats.py for finding the files and DESIGN.md for the
layouts): each reads its files, orients the matrices as `SAE` expects and says how to encode."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import torch

from saeembed.errors import SAEError
from saeembed.hookpoints import HookPoint, try_parse_hook
from saeembed.sae.files import (
    fold_decoder_norm, listing, need, read_json, read_safetensors, saeembed_hook, tensors, torch_files, try_json,
)
from saeembed.sae.model import SAE, SAEConfig
from saeembed.sae.saelens_loader import load_saelens


def _load_sparsify(path: Path, label: str) -> SAE:
    raw = read_json(need(path, "cfg.json", fmt="sparsify"))
    wfile = need(path, "sae.safetensors", fmt="sparsify")
    t = read_safetensors(wfile)
    enc, enc_b, W_dec, b_dec = tensors(t, wfile, "encoder.weight", "encoder.bias", "W_dec", "b_dec")
    transcoder = bool(raw.get("transcode"))
    if "W_skip" in t and not transcoder:
        raise SAEError(f"sparsify SAE {label} has a skip connection (W_skip), which saeembed does not support")
    if raw.get("activation", "topk") != "topk":
        raise SAEError(f"sparsify SAE {label} uses activation {raw['activation']!r}; saeembed reads topk only")
    if not raw.get("k"):
        raise SAEError(f"sparsify SAE {label} has no k in cfg.json")
    d_in = int(raw.get("d_in") or enc.shape[1])
    d_sae = int(raw.get("num_latents") or d_in * int(raw.get("expansion_factor") or 0) or enc.shape[0])
    hook_in, hook_out = _sparsify_hooks(path.name, transcoder)
    cfg = SAEConfig(
        d_in=d_in,
        d_sae=d_sae,
        architecture="topk",
        k=int(raw["k"]),
        apply_b_dec_to_input=not transcoder,  # sparsify subtracts b_dec, except for transcoders
        model=try_json(path.parent / "config.json").get("model"),  # the run config, when present
        hook=hook_in,
        d_out=int(W_dec.shape[1]) if transcoder else None,
        hook_out=hook_out,
        # a transcoder's skip connection only adds W_skip x to its output: the latents do not see it
        extra={"raw_cfg": raw, **({"transcoder": True} if transcoder else {}),
               **({"skip_connection": True} if "W_skip" in t else {})},
    )
    return SAE(cfg, enc.T, enc_b, W_dec, b_dec)


def _sparsify_hooks(name: str, transcoder: bool) -> tuple[str | None, str | None]:
    """(hook read, hook written) of a sparsify hookpoint folder. sparsify hooks a module: an SAE reads its
    output, a transcoder its input and predicts its output (trainer.py: `inputs if cfg.transcode else outputs`)."""
    if not re.search(r"\.\d+", name):  # a module path, not any folder name
        return None, None
    hook = try_parse_hook(name)
    if not transcoder:
        return saeembed_hook(name), None
    if hook is not None and hook.position == "mlp_out":  # the MLP reads the pre-MLP norm's output, weights included
        return HookPoint(hook.layer, "ln2").name, hook.name
    if hook is not None and hook.position == "post":  # a whole block reads its input
        return HookPoint(hook.layer, "pre").name, hook.name
    return f"input of {name}", name  # kept as written: encoding refuses it by name


def _load_gemmascope(path: Path, label: str) -> SAE:
    npz = need(path, "params.npz", fmt="Gemma Scope")
    try:
        with np.load(npz) as data:  # allow_pickle stays False: plain arrays only
            arrays = {("W_" + k[2:] if k.startswith("w_") else k): torch.from_numpy(np.array(data[k])) for k in data}
    except Exception as e:
        raise SAEError(f"cannot read {npz} as a numpy archive: {e}") from e
    W_enc, b_enc, W_dec, b_dec, threshold = tensors(arrays, npz, "W_enc", "b_enc", "W_dec", "b_dec", "threshold")
    m = re.search(r"gemma-scope-(\d+b)-(pt|it)", label)
    layer = re.search(r"layer_(\d+)", label)
    # layer_N of a residual-stream release (gemma-scope-*-res) reads the output of block N
    residual = not re.search(r"-(mlp|att|transcoders)(?![a-z])", label)
    cfg = SAEConfig(
        d_in=W_enc.shape[0],
        d_sae=W_enc.shape[1],
        architecture="jumprelu",
        apply_b_dec_to_input=False,
        model=f"google/gemma-2-{m[1]}{'-it' if m[2] == 'it' else ''}" if m else None,
        hook=f"layers.{layer[1]}" if layer and residual else None,
        extra={"raw_cfg": {}},  # Gemma Scope ships no config
    )
    return SAE(cfg, W_enc, b_enc, W_dec, b_dec, threshold)


def _load_goodfire(path: Path, label: str) -> SAE:
    file = path
    if path.is_dir():
        files = torch_files(path)
        if len(files) != 1:
            raise SAEError(f"Goodfire SAE folder {path} should hold one .pth file; it holds: {listing(path)}")
        file = files[0]
    try:  # weights_only: never unpickle arbitrary objects from a downloaded file
        sd = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:
        raise SAEError(f"cannot read {file} as a plain tensor dict: {str(e).splitlines()[0] if str(e) else e!r}") from e
    if not isinstance(sd, dict):
        raise SAEError(f"{file} holds a {type(sd).__name__}, not a dict of tensors")
    names = ("encoder_linear.weight", "encoder_linear.bias", "decoder_linear.weight", "decoder_linear.bias")
    enc, enc_b, dec, dec_b = tensors(sd, file, *names)
    m = re.search(r"([\w.-]+?)-SAE-l(\d+)", f"{label} {file.name}")  # e.g. Llama-3.1-8B-Instruct-SAE-l19
    cfg = SAEConfig(
        d_in=enc.shape[1],
        d_sae=enc.shape[0],
        architecture="relu",
        apply_b_dec_to_input=False,
        model=f"meta-llama/{m[1]}" if m and m[1].startswith("Llama") else None,
        hook=f"layers.{m[2]}" if m else None,
        extra={"raw_cfg": {}},  # Goodfire ships no config
    )
    return SAE(cfg, enc.T, enc_b, dec.T, dec_b)


def _load_llamascope(path: Path, label: str) -> SAE:
    hp_file = path / "hyperparams.json" if (path / "hyperparams.json").is_file() else path / "config.json"
    hp = read_json(need(path, hp_file.name, fmt="Llama Scope"))
    candidates = ["checkpoints/final.safetensors", "sae_weights.safetensors"]
    wfile = need(path, *candidates, fmt="Llama Scope")
    t = read_safetensors(wfile)
    enc, enc_b, dec = tensors(t, wfile, "encoder.weight", "encoder.bias", "decoder.weight")
    d_in = int(hp.get("d_model") or enc.shape[1])
    d_sae = int(hp.get("d_sae") or d_in * int(hp.get("expansion_factor") or 0) or enc.shape[0])
    b_dec = t.get("decoder.bias", torch.zeros(d_in))  # use_decoder_bias may be off
    W_enc, b_enc, W_dec = enc.T, enc_b, dec.T
    if hp.get("sparsity_include_decoder_norm"):
        # lm-saes compares (pre-activation x decoder norm) with the threshold; folding the norm into
        # the encoder gives the same latents lm-saes reports at inference, and the same reconstruction.
        W_enc, b_enc, W_dec = fold_decoder_norm(W_enc, b_enc, W_dec)
    act = str(hp.get("act_fn", "jumprelu")).lower()
    threshold, k = None, None
    if act == "jumprelu":
        if hp.get("jump_relu_threshold") is not None:
            threshold = torch.tensor(float(hp["jump_relu_threshold"]))  # one scalar for all latents
        elif "log_jumprelu_threshold" in t:
            threshold = t["log_jumprelu_threshold"].float().exp()
        else:
            raise SAEError(f"Llama Scope SAE {label} has no jump_relu_threshold in {hp_file.name}")
    elif act == "topk":
        k = int(hp.get("top_k") or 0) or None
    elif act != "relu":
        raise SAEError(f"Llama Scope SAE {label} uses act_fn {act!r}; saeembed reads jumprelu, topk, relu")
    input_scale, output_scale = _llamascope_scales(hp, t, d_in, label)
    hook_in, hook_out = hp.get("hook_point_in"), hp.get("hook_point_out", hp.get("hook_point_in"))
    cfg = SAEConfig(
        d_in=d_in,
        d_sae=d_sae,
        architecture="topk" if act == "topk" else act,
        k=k,
        apply_b_dec_to_input=bool(hp.get("apply_decoder_bias_to_pre_encoder", False)),
        input_scale=input_scale,
        output_scale=output_scale,
        model=hp.get("model_name") or ("meta-llama/Llama-3.1-8B" if "Llama3_1-8B" in label else None),
        hook=saeembed_hook(hook_in),
        d_out=int(W_dec.shape[1]) if hook_in != hook_out else None,
        hook_out=saeembed_hook(hook_out) if hook_in != hook_out else None,
        extra={"raw_cfg": hp, **({"transcoder": True} if hook_in != hook_out else {})},
    )
    return SAE(cfg, W_enc, b_enc, W_dec, b_dec, threshold)


def _llamascope_scales(hp: dict, t: dict, d_in: int, label: str) -> tuple[float, float | None]:
    """lm-saes trains on inputs rescaled to norm sqrt(d_model); undo that with the dataset norms."""
    mode = hp.get("norm_activation", "dataset-wise")
    if mode == "inference":  # already folded into the weights
        return 1.0, None
    if mode != "dataset-wise":
        raise SAEError(f"Llama Scope SAE {label} uses norm_activation={mode!r}, which saeembed does not support")
    norms = hp.get("dataset_average_activation_norm") or {}
    hook_in, hook_out = hp.get("hook_point_in"), hp.get("hook_point_out", hp.get("hook_point_in"))
    n_in = norms.get("in", norms.get(hook_in))
    n_out = norms.get("out", norms.get(hook_out, n_in))
    if n_in is None and f"dataset_average_activation_norm.{hook_in}" in t:  # newer lm-saes keeps them here
        n_in = t[f"dataset_average_activation_norm.{hook_in}"].item()
        n_out = t.get(f"dataset_average_activation_norm.{hook_out}", torch.tensor(n_in)).item()
    if n_in is None:
        raise SAEError(
            f"Llama Scope SAE {label} is dataset-wise normalised but gives no dataset_average_activation_norm"
        )
    root = math.sqrt(d_in)
    return root / float(n_in), float(n_out) / root


LOADERS = {
    "saelens": load_saelens,
    "sparsify": _load_sparsify,
    "gemmascope": _load_gemmascope,
    "goodfire": _load_goodfire,
    "llamascope": _load_llamascope,
}
