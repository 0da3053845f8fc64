"""Read public SAE weight formats into an `SAE`, and write SAEs in the SAELens format.

Formats read (see DESIGN.md "Formats to read"):

- saelens:    cfg.json + sae_weights.safetensors (W_enc [d_in, d_sae], b_enc, W_dec, b_dec, threshold)
- sparsify:   <hookpoint>/cfg.json + sae.safetensors (encoder.weight [d_sae, d_in], encoder.bias, W_dec, b_dec)
- gemmascope: params.npz (W_enc [d_in, d_sae], W_dec, b_enc, b_dec, threshold)
- goodfire:   a .pth tensor dict (encoder_linear.*, decoder_linear.weight [d_in, d_sae])
- llamascope: hyperparams.json + checkpoints/final.safetensors (encoder.*, decoder.*), dataset-wise norm

A source is a local file or folder, a Hugging Face hub id with an optional subfolder
(`org/repo/sub/path` or `org/repo:sub/path`; local paths win when both could apply), or a published
release from the catalogue, `release:RELEASE/SAE_ID` (releases.py), read from the local hub cache.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import save_file

from saeembed.errors import SAEError
from saeembed.hookpoints import try_parse_hook
from saeembed.sae.files import listing, tl_hook_name, torch_files, try_json
from saeembed.sae.loaders import LOADERS
from saeembed.sae.model import SAE
from saeembed.sae.releases import apply_release, is_release, resolve_release

FORMATS = ("saelens", "sparsify", "gemmascope", "goodfire", "llamascope")

_KNOWN = (
    "SAELens (cfg.json + sae_weights.safetensors), sparsify (cfg.json + sae.safetensors), "
    "Gemma Scope (params.npz), Goodfire (a .pth file), "
    "Llama Scope (hyperparams.json + checkpoints/final.safetensors)"
)
_HUB_ID = re.compile(r"^([\w.-]+/[\w.-]+)(?:[:/](.*))?$")


# --- public API ---------------------------------------------------------------------------


def load_sae(source: str | os.PathLike, *, hookpoint: str | None = None, device: str = "cpu") -> SAE:
    """Load an SAE from a local file/folder or a hub id; `hookpoint` picks one SAE of several."""
    text = str(source)
    release = None
    if is_release(text):  # release:RELEASE/SAE_ID, from the catalogue and the local hub cache
        path, release = resolve_release(text)
    else:
        path = Path(text).expanduser()
        if not path.exists():
            path = _download(text, hookpoint)
    path, label = _pick(path, text, hookpoint)
    fmt = detect_format(path)
    if path.is_file() and fmt != "goodfire":
        path = path.parent  # a config or weights file stands for its folder
    try:
        sae = LOADERS[fmt](path, label)
    except (ValueError, TypeError, KeyError, AttributeError, IndexError, RecursionError, RuntimeError) as e:
        # A config value of the wrong type ("d_in": "abc"), a nested object where a number belongs, or a
        # string where a tensor belongs: one clear line instead of a traceback from deep in the loader.
        raise SAEError(f"cannot load SAE {label} as {fmt}: a malformed config value or tensor "
                       f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else 'no detail'})") from None
    check_finite(sae, label)
    sae.cfg.format = fmt
    sae.cfg.source = label
    if release is not None:
        apply_release(sae, release, label)
    wanted = try_parse_hook(hookpoint)
    if wanted and sae.cfg.hook and wanted.name != sae.cfg.hook:
        raise SAEError(f"SAE {label} reads hook point {sae.cfg.hook}, not the requested {hookpoint}")
    return sae.to(device)


def check_finite(sae: SAE, label: str) -> None:
    """Refuse weights holding NaN or inf: they encode every document to nothing, silently."""
    for name, tensor in sae.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise SAEError(f"SAE {label} has {bad} NaN or infinite value(s) in {name}; the weights are damaged")


def detect_format(path: Path) -> str:
    """Name the format of an SAE file or folder; SAEError listing the known formats if none fits."""
    path = Path(path)
    fmt = _guess(path)
    if fmt is None:
        raise SAEError(f"{path} is not an SAE in a format saeembed reads ({_KNOWN}); it holds: {listing(path)}")
    return fmt


def save_sae(
    sae: SAE,
    out_dir: str | os.PathLike,
    *,
    model_card: dict | None = None,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Write `sae` as a SAELens folder (cfg.json + sae_weights.safetensors) and return the folder.

    SAELens 6 reads it the same: input/output scales are folded into the weights (SAELens never applies
    a stored scale when it loads from disk), and cfg.json says float32, the dtype SAELens computes in
    (it casts every tensor to the config's dtype on load, so fp16 storage only rounds the weights).
    The full SAEConfig also goes into cfg.json under "saeembed"; SAELens ignores that key.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sae = fold_scales(sae)
    c = sae.cfg
    names = ["W_enc", "b_enc", "W_dec", "b_dec"] + [n for n in ("threshold", "r_mag", "b_mag") if getattr(sae, n) is not None]
    tensors = {("b_gate" if n == "b_enc" and c.architecture == "gated" else n): getattr(sae, n).detach().to("cpu", dtype).contiguous()
               for n in names}
    hook = try_parse_hook(c.hook)
    cfg = {
        "architecture": _saelens_architecture(c),
        "d_in": c.d_in,
        "d_sae": c.d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": c.apply_b_dec_to_input,
        "normalize_activations": c.normalize,
        "hook_name": tl_hook_name(hook) if hook else c.hook,
        "hook_layer": hook.layer if hook else None,
        "model_name": c.model,
    }
    if c.transcoder:
        out_hook = try_parse_hook(c.hook_out)
        cfg |= {"d_out": c.d_out or c.d_in, "hook_name_out": tl_hook_name(out_hook) if out_hook else c.hook_out,
                "hook_layer_out": out_hook.layer if out_hook else None}
    if hook is not None and getattr(hook, "head", None) is not None:
        cfg["hook_head_index"] = hook.head  # SAELens feeds it hook_z[:, :, head], already d_head wide
    elif hook is not None and hook.position in ("attn_z", "attn_z_folded"):
        cfg["reshape_activations"] = "hook_z"
    # TransformerLens folds norm weights and value biases by default; say when this SAE read them unfolded
    unfolded = {"ln2": {"fold_ln": False}, "attn_z": {"fold_value_biases": False}}
    if hook is not None and hook.position in unfolded:
        cfg["model_from_pretrained_kwargs"] = unfolded[hook.position]
    if c.prepend_bos is not None:
        cfg["prepend_bos"] = c.prepend_bos
    if c.context_size is not None:
        cfg["context_size"] = c.context_size
    if c.k is not None:
        cfg["k"] = c.k
        cfg["activation_fn_kwargs"] = {"k": c.k}  # where SAELens < 6 looks for it
    cfg["saeembed"] = {"config": c.to_dict(), "model_card": model_card}
    save_file(tensors, str(out / "sae_weights.safetensors"))
    (out / "cfg.json").write_text(json.dumps(cfg, indent=2, default=str))
    return out


def fold_scales(sae: SAE) -> SAE:
    """The same SAE with its input and output scales folded into the weights (same latents, same
    reconstruction), or `sae` itself when it has none."""
    c = sae.cfg
    s = float(c.input_scale)
    o = float(c.output_scale) if c.output_scale is not None else 1.0 / s
    if s == 1.0 and o == 1.0:
        return sae
    W_enc, b_enc, W_dec, b_dec = (getattr(sae, n).detach().double() for n in ("W_enc", "b_enc", "W_dec", "b_dec"))
    gated = {"r_mag": sae.r_mag, "b_mag": sae.b_mag.detach().double()} if c.architecture == "gated" else {}
    apply_b_dec = c.apply_b_dec_to_input
    if apply_b_dec and abs(s * o - 1.0) > 1e-12:
        # the input needs b_dec / s but the output b_dec * o: move the input's share into b_enc
        shift = b_dec @ W_enc
        b_enc = b_enc - shift
        if gated:  # the magnitude path reads the same input through W_enc e^r_mag
            gated["b_mag"] = gated["b_mag"] - shift * sae.r_mag.double().exp()
        apply_b_dec = False
    # with o = 1 / s: (x - b_dec o)(s W) = (s x - b_dec) W, SAELens's own fold_activation_norm_scaling_factor
    folded = SAE(
        replace(c, input_scale=1.0, output_scale=None, apply_b_dec_to_input=apply_b_dec, extra=dict(c.extra)),
        W_enc * s, b_enc, W_dec * o, b_dec * o, sae.threshold, **gated,
    )
    return folded


def _saelens_architecture(c) -> str:
    """SAELens's architecture name for an SAE; a TopK transcoder has none, so it is refused."""
    if c.transcoder:
        if c.architecture not in ("relu", "jumprelu"):
            raise SAEError(f"SAELens has no {c.architecture} transcoder; this SAE cannot be written in its format")
        return "transcoder" if c.architecture == "relu" else "jumprelu_transcoder"
    return "standard" if c.architecture == "relu" else c.architecture


# --- finding the SAE --------------------------------------------------------------------------


def _download(text: str, hookpoint: str | None) -> Path:
    m = _HUB_ID.match(text)
    if not m or text.startswith((".", "/", "~")):
        raise SAEError(
            f"SAE source {text!r} is neither an existing file or folder nor a hub id like org/repo/subfolder"
        )
    repo_id, sub = m.group(1), (m.group(2) or "").strip("/")
    base = f"{sub}/" if sub else ""
    if hookpoint:  # fetch only that hook point's folder, spelled exactly or with a module prefix
        patterns = [f"{base}{hookpoint}/*", f"{base}*.{hookpoint}/*"]
    else:
        patterns = [sub, f"{sub}/*"] if sub else None  # the subpath may name a file or a folder
    try:
        from huggingface_hub import snapshot_download

        root = Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as e:  # network, auth, offline, bad id: all become one clear line
        raise SAEError(
            f"cannot fetch SAE {text!r} from the Hugging Face hub ({_hub_reason(e)}), "
            "and there is no local file or folder by that name"
        ) from e
    path = root / sub if sub else root
    if not path.exists():
        raise SAEError(f"hub repository {repo_id!r} has nothing under {sub!r} (SAE source {text!r})")
    return path


def _hub_reason(e: Exception) -> str:
    names = {cls.__name__ for cls in type(e).__mro__}  # by name: the classes moved between versions
    if "GatedRepoError" in names:
        return "the repository is gated: accept its terms on the hub and log in"
    if "RepositoryNotFoundError" in names:
        return "no such repository, or it is private"
    if names & {"LocalEntryNotFoundError", "OfflineModeIsEnabled"}:
        return "not in the local cache and the hub cannot be reached or offline mode is on"
    if "HFValidationError" in names:
        return "not a valid repository id"
    first = str(e).strip().splitlines()
    return first[0][:200] if first else type(e).__name__


def _pick(path: Path, label: str, hookpoint: str | None) -> tuple[Path, str]:
    """Descend into the subfolder holding the wanted SAE when `path` holds several (sparsify runs)."""
    if path.is_file() or (not hookpoint and _guess(path)):
        return path, label
    subs = [d for d in sorted(path.iterdir()) if d.is_dir() and _guess(d)] if path.is_dir() else []
    if hookpoint:
        wanted = try_parse_hook(hookpoint)
        for d in subs:  # the exact folder name, or the same hook point in another spelling
            if d.name == hookpoint or (wanted is not None and try_parse_hook(d.name) == wanted):
                return d, f"{label.rstrip('/')}/{d.name}"
        if _guess(path):
            return path, label  # a single SAE; load_sae checks that its hook point matches
        available = ", ".join(d.name for d in subs) or "none"
        raise SAEError(f"{label} has no SAE for hook point {hookpoint!r}; available: {available}")
    if len(subs) == 1:
        return subs[0], f"{label.rstrip('/')}/{subs[0].name}"
    if len(subs) > 1:
        names = ", ".join(d.name for d in subs)
        raise SAEError(f"{label} holds SAEs for several hook points ({names}); pick one with hookpoint")
    return path, label  # detect_format will say what is wrong


def _guess(path: Path) -> str | None:
    if path.is_file():
        if path.suffix in (".pth", ".pt"):
            return "goodfire"
        path = path.parent
    if not path.is_dir():
        return None
    if (path / "cfg.json").is_file():
        if (path / "sae.safetensors").is_file():
            return "sparsify"
        if (path / "sae_weights.safetensors").is_file():
            return "saelens"
        # Weights missing: tell the two apart by their config keys so the error names the right file.
        raw = try_json(path / "cfg.json")
        return "sparsify" if "d_sae" not in raw and ({"num_latents", "expansion_factor"} & raw.keys()) else "saelens"
    if (path / "params.npz").is_file():
        return "gemmascope"
    if (path / "hyperparams.json").is_file() or "hook_point_in" in try_json(path / "config.json"):
        return "llamascope"
    if len(torch_files(path)) == 1:
        return "goodfire"
    return None
