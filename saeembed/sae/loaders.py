"""One loader per public SAE weight format (see formats.py for finding the files and DESIGN.md for the
layouts): each reads its files, orients the matrices as `SAE` expects and says how to encode."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from saeembed.errors import SAEError
from saeembed.hookpoints import HookPoint, try_parse_hook
from saeembed.sae.model import SAE, SAEConfig


def _load_saelens(path: Path, label: str) -> SAE:
    raw = _read_json(_need(path, "cfg.json", fmt="SAELens"))
    wfile = _need(path, "sae_weights.safetensors", fmt="SAELens")
    t = _read_safetensors(wfile)
    meta = raw.get("meta") or raw.get("metadata") or {}  # SAELens >= 6 nests model and hook names here

    def get(key, default=None):
        return raw.get(key, meta.get(key, default))

    arch, k = _saelens_rule(raw, label)
    W_enc, b_enc, W_dec, b_dec = _tensors(t, wfile, "W_enc", "b_enc", "W_dec", "b_dec")
    threshold = None
    if arch == "jumprelu":
        threshold = _saelens_threshold(t, wfile)
    scale = t.get("scaling_factor")
    if scale is not None and not torch.allclose(scale.float(), torch.ones_like(scale.float())):
        raise SAEError(f"SAE {label} has a finetuning scaling factor, which saeembed does not support")
    if get("rescale_acts_by_decoder_norm"):
        W_enc, b_enc, W_dec = _fold_decoder_norm(W_enc, b_enc, W_dec)
    cfg = SAEConfig(
        d_in=int(raw.get("d_in") or W_enc.shape[0]),
        d_sae=int(raw.get("d_sae") or W_enc.shape[1]),
        architecture=arch,
        k=k,
        # SAELens defaults this to True when the key is missing
        apply_b_dec_to_input=bool(raw.get("apply_b_dec_to_input", True)),
        input_scale=_saelens_input_scale(raw, t, label),
        model=get("model_name"),
        hook=_hook(get("hook_name")),
        extra={"raw_cfg": {key: v for key, v in raw.items() if key != "saeembed"}},
    )
    own = raw.get("saeembed")
    if isinstance(own, dict):  # written by save_sae: restore what SAELens keys cannot hold
        saved = own.get("config") or {}
        cfg.input_scale = float(saved.get("input_scale", cfg.input_scale))
        cfg.output_scale = saved.get("output_scale")
        cfg.model = saved.get("model", cfg.model)
        cfg.hook = saved.get("hook", cfg.hook)
        cfg.extra = {**(saved.get("extra") or {}), "raw_cfg": cfg.extra["raw_cfg"]}
        cfg.extra["origin"] = {"format": saved.get("format"), "source": saved.get("source")}
        if own.get("model_card") is not None:
            cfg.extra["model_card"] = own["model_card"]
    return SAE(cfg, W_enc, b_enc, W_dec, b_dec, threshold)


def _saelens_rule(raw: dict, label: str) -> tuple[str, int | None]:
    """(architecture, k) from a SAELens config of any version."""
    arch = raw.get("architecture") or "standard"
    act = raw.get("activation_fn_str", raw.get("activation_fn")) or "relu"
    k = raw.get("k", (raw.get("activation_fn_kwargs") or {}).get("k"))
    if arch == "standard" and act == "relu":
        return "relu", None
    if arch == "topk" or (arch == "standard" and act == "topk"):
        if not k:
            raise SAEError(f"TopK SAE {label} does not say its k (cfg.json 'k' or activation_fn_kwargs.k)")
        return "topk", int(k)
    if arch in ("jumprelu", "batchtopk"):  # BatchTopK runs at inference as JumpReLU
        return "jumprelu", None
    what = f"architecture {arch!r}" if arch != "standard" else f"activation function {act!r}"
    raise SAEError(
        f"SAE {label} has {what}, which saeembed does not read; it reads standard (ReLU), topk, jumprelu, batchtopk"
    )


def _saelens_threshold(t: dict, wfile: Path) -> torch.Tensor:
    if "threshold" in t:
        return t["threshold"]
    if "log_threshold" in t:  # training checkpoints keep the log
        return t["log_threshold"].float().exp()
    if "topk_threshold" in t:  # BatchTopK training checkpoints keep one scalar
        return t["topk_threshold"].float().reshape(())
    raise SAEError(f"{wfile} lacks the JumpReLU tensor 'threshold'; it holds {', '.join(sorted(t))}")


def _saelens_input_scale(raw: dict, t: dict, label: str) -> float:
    norm = raw.get("normalize_activations", "none")
    if norm in (None, False, "none"):
        return 1.0
    if norm in (True, "expected_average_only_in"):
        factor = raw.get("norm_scaling_factor")
        if factor is None and "norm_scaling_factor" in t:
            factor = t["norm_scaling_factor"].item()
        if factor is None:
            raise SAEError(
                f"SAE {label} expects inputs scaled by a dataset-wide factor (normalize_activations={norm!r}) "
                "that its files do not hold; add 'norm_scaling_factor' to cfg.json or fold it into the weights"
            )
        return float(factor)
    raise SAEError(f"SAE {label} uses normalize_activations={norm!r}, which saeembed does not support")


def _load_sparsify(path: Path, label: str) -> SAE:
    raw = _read_json(_need(path, "cfg.json", fmt="sparsify"))
    wfile = _need(path, "sae.safetensors", fmt="sparsify")
    t = _read_safetensors(wfile)
    enc, enc_b, W_dec, b_dec = _tensors(t, wfile, "encoder.weight", "encoder.bias", "W_dec", "b_dec")
    if "W_skip" in t:
        raise SAEError(f"sparsify SAE {label} has a skip connection (W_skip), which saeembed does not support")
    if raw.get("activation", "topk") != "topk":
        raise SAEError(f"sparsify SAE {label} uses activation {raw['activation']!r}; saeembed reads topk only")
    if not raw.get("k"):
        raise SAEError(f"sparsify SAE {label} has no k in cfg.json")
    d_in = int(raw.get("d_in") or enc.shape[1])
    d_sae = int(raw.get("num_latents") or d_in * int(raw.get("expansion_factor") or 0) or enc.shape[0])
    transcoder = bool(raw.get("transcode"))
    cfg = SAEConfig(
        d_in=d_in,
        d_sae=d_sae,
        architecture="topk",
        k=int(raw["k"]),
        apply_b_dec_to_input=not transcoder,  # sparsify subtracts b_dec, except for transcoders
        model=try_json(path.parent / "config.json").get("model"),  # the run config, when present
        hook=_hook(path.name),
        extra={"raw_cfg": raw, **({"transcoder": True} if transcoder else {})},
    )
    return SAE(cfg, enc.T, enc_b, W_dec, b_dec)


def _load_gemmascope(path: Path, label: str) -> SAE:
    npz = _need(path, "params.npz", fmt="Gemma Scope")
    try:
        with np.load(npz) as data:  # allow_pickle stays False: plain arrays only
            arrays = {("W_" + k[2:] if k.startswith("w_") else k): torch.from_numpy(np.array(data[k])) for k in data}
    except Exception as e:
        raise SAEError(f"cannot read {npz} as a numpy archive: {e}") from e
    W_enc, b_enc, W_dec, b_dec, threshold = _tensors(arrays, npz, "W_enc", "b_enc", "W_dec", "b_dec", "threshold")
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
    enc, enc_b, dec, dec_b = _tensors(sd, file, *names)
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
    hp = _read_json(_need(path, hp_file.name, fmt="Llama Scope"))
    candidates = ["checkpoints/final.safetensors", "sae_weights.safetensors"]
    wfile = _need(path, *candidates, fmt="Llama Scope")
    t = _read_safetensors(wfile)
    enc, enc_b, dec = _tensors(t, wfile, "encoder.weight", "encoder.bias", "decoder.weight")
    d_in = int(hp.get("d_model") or enc.shape[1])
    d_sae = int(hp.get("d_sae") or d_in * int(hp.get("expansion_factor") or 0) or enc.shape[0])
    b_dec = t.get("decoder.bias", torch.zeros(d_in))  # use_decoder_bias may be off
    W_enc, b_enc, W_dec = enc.T, enc_b, dec.T
    if hp.get("sparsity_include_decoder_norm"):
        # lm-saes compares (pre-activation x decoder norm) with the threshold; folding the norm into
        # the encoder gives the same latents lm-saes reports at inference, and the same reconstruction.
        W_enc, b_enc, W_dec = _fold_decoder_norm(W_enc, b_enc, W_dec)
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
        hook=_hook(hook_in),
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
    "saelens": _load_saelens,
    "sparsify": _load_sparsify,
    "gemmascope": _load_gemmascope,
    "goodfire": _load_goodfire,
    "llamascope": _load_llamascope,
}



# --- small helpers -----------------------------------------------------------------------


def _fold_decoder_norm(W_enc, b_enc, W_dec):
    """Move each decoder row's norm into the encoder: same reconstruction, unit-norm decoder."""
    norm = W_dec.float().norm(dim=1)
    norm = torch.where(norm > 0, norm, torch.ones_like(norm))  # dead rows stay as they are
    return W_enc.float() * norm, b_enc.float() * norm, W_dec.float() / norm[:, None]


def _hook(name) -> str | None:
    hook = try_parse_hook(name) if isinstance(name, str) else None
    return hook.name if hook else None


def tl_hook_name(hook: HookPoint) -> str:
    return f"blocks.{hook.layer}.hook_resid_{hook.position}"


def _need(folder: Path, *names: str, fmt: str) -> Path:
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise SAEError(f"{fmt} SAE folder {folder} lacks {' or '.join(names)}; it holds: {listing(folder)}")


def listing(folder: Path) -> str:
    if not folder.is_dir():
        return "nothing (no such folder)" if not folder.exists() else folder.name
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    more = f" and {len(names) - 20} more" if len(names) > 20 else ""
    return (", ".join(names[:20]) + more) or "nothing"


def torch_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in (".pth", ".pt"))


def _read_json(file: Path) -> dict:
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError, RecursionError) as e:
        raise SAEError(f"cannot read {file} as JSON: {str(e)[:200] or type(e).__name__}") from None
    if not isinstance(data, dict):
        raise SAEError(f"{file} holds a JSON {type(data).__name__}, not an object")
    return data


def try_json(file: Path) -> dict:
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def _read_safetensors(file: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(file))
    except Exception as e:
        raise SAEError(f"cannot read {file} as safetensors: {e}") from e


def _tensors(tensors: dict, file: Path, *names: str) -> list[torch.Tensor]:
    missing = [n for n in names if n not in tensors]
    if missing:
        raise SAEError(f"{file} lacks tensor(s) {', '.join(missing)}; it holds {', '.join(sorted(tensors)) or 'none'}")
    return [tensors[n] for n in names]
