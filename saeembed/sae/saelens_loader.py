"""The SAELens format: cfg.json + sae_weights.safetensors, as SAELens 6 reads it (sae_lens/saes/*.py,
sae_lens/loading/pretrained_sae_loaders.py handle_pre_6_0_config).

Architectures: standard (ReLU), topk, jumprelu, batchtopk (runs as jumprelu), gated (b_gate, r_mag, b_mag; no
b_enc), and the transcoders transcoder / skip_transcoder / jumprelu_transcoder (encoder reads `hook_name`,
decoder writes `hook_name_out`; b_dec is never subtracted from the input; W_skip only adds to the output, so
the latents ignore it). normalize_activations: none, expected_average_only_in (a dataset-wide factor),
constant_norm_rescale and layer_norm (per token, see model.normalize_input). hook_head_index on
attn.hook_z: the SAE reads that one head's z (hook `layers.N.attn_z.folded.headH`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from saeembed.errors import SAEError
from saeembed.hookpoints import HookPoint, try_parse_hook
from saeembed.sae.files import fold_decoder_norm, need, positive_int, read_json, read_safetensors, saeembed_hook, tensors
from saeembed.sae.model import SAE, SAEConfig

_TRANSCODERS = {"transcoder": "relu", "skip_transcoder": "relu", "jumprelu_transcoder": "jumprelu"}


def load_saelens(path: Path, label: str) -> SAE:
    raw = read_json(need(path, "cfg.json", fmt="SAELens"))
    wfile = need(path, "sae_weights.safetensors", fmt="SAELens")
    t = read_safetensors(wfile)
    meta = raw.get("meta") or raw.get("metadata") or {}  # SAELens >= 6 nests model and hook names here
    meta = meta if isinstance(meta, dict) else {}

    def get(key, default=None):
        return raw.get(key, meta.get(key, default))

    arch, k = _saelens_rule(raw, label)
    transcoder = raw.get("architecture") in _TRANSCODERS
    gated = {}
    if arch == "gated":
        W_enc, b_enc, W_dec, b_dec, r_mag, b_mag = tensors(t, wfile, "W_enc", "b_gate", "W_dec", "b_dec", "r_mag", "b_mag")
        gated = {"r_mag": r_mag, "b_mag": b_mag}
    else:
        W_enc, b_enc, W_dec, b_dec = tensors(t, wfile, "W_enc", "b_enc", "W_dec", "b_dec")
    threshold = _saelens_threshold(t, wfile) if arch == "jumprelu" else None
    scale = t.get("scaling_factor")
    if scale is not None and not torch.allclose(scale.float(), torch.ones_like(scale.float())):
        raise SAEError(f"SAE {label} has a finetuning scaling factor, which saeembed does not support")
    if get("rescale_acts_by_decoder_norm"):
        if arch == "gated":
            raise SAEError(f"gated SAE {label} rescales by decoder norm, which saeembed does not read")
        W_enc, b_enc, W_dec = fold_decoder_norm(W_enc, b_enc, W_dec)
    d_in = int(raw.get("d_in") or W_enc.shape[0])
    cfg = SAEConfig(
        d_in=d_in,
        d_sae=int(raw.get("d_sae") or W_enc.shape[1]),
        architecture=arch,
        k=k,
        # SAELens defaults this to True when the key is missing; its Transcoder.process_sae_in never applies it
        apply_b_dec_to_input=bool(raw.get("apply_b_dec_to_input", True)) and not transcoder,
        input_scale=_saelens_input_scale(raw, t, label),
        normalize=_saelens_normalize(raw),
        model=get("model_name"),
        hook=_saelens_hook(get, label),
        # SAELens defaults a missing prepend_bos to True (handle_pre_6_0_config), as TransformerLens does
        prepend_bos=get("prepend_bos") is not False,
        context_size=positive_int(get("context_size")),
        d_out=int(raw.get("d_out") or W_dec.shape[1]) if transcoder else None,
        hook_out=(saeembed_hook(get("hook_name_out")) or "(not named)") if transcoder else None,
        extra={"raw_cfg": {key: v for key, v in raw.items() if key != "saeembed"},
               **({"skip_connection": True} if "W_skip" in t else {})},
    )
    own = raw.get("saeembed")
    if isinstance(own, dict):  # written by save_sae: restore what SAELens keys cannot hold
        saved = own.get("config") or {}
        cfg.input_scale = float(saved.get("input_scale", cfg.input_scale))
        cfg.output_scale = saved.get("output_scale")
        cfg.model = saved.get("model", cfg.model)
        cfg.hook = saved.get("hook", cfg.hook)
        cfg.hook_out = saved.get("hook_out", cfg.hook_out)
        # files saeembed wrote before it recorded these were trained on the tokenizer as it is
        cfg.prepend_bos = saved.get("prepend_bos")
        cfg.context_size = saved.get("context_size")
        cfg.extra = {**(saved.get("extra") or {}), "raw_cfg": cfg.extra["raw_cfg"]}
        cfg.extra["origin"] = {"format": saved.get("format"), "source": saved.get("source")}
        if own.get("model_card") is not None:
            cfg.extra["model_card"] = own["model_card"]
    return SAE(cfg, W_enc, b_enc, W_dec, b_dec, threshold, **gated)


def _saelens_hook(get, label: str) -> str | None:
    """saeembed's name for the SAELens hook_name; an unsupported name is kept as written, so that encoding
    refuses it by name instead of reading another hook."""
    name = get("hook_name", get("hook_point"))
    if not isinstance(name, str) or not name:
        return None
    head = get("hook_head_index", get("hook_point_head_index"))
    hook = try_parse_hook(name)
    if head is not None and (hook is None or hook.position not in ("attn_z", "attn_z_folded")
                             or getattr(hook, "head", None) is not None
                             or isinstance(head, bool) or not isinstance(head, int) or head < 0):
        return f"{name} (head {head} only)"  # one head of hook_q/k/v or the like: refused at encode by name
    if hook is None:
        return name
    # TransformerLens folds norm weights and value biases into the next layer by default (SAELens keeps
    # that default), so its ln2.hook_normalized lacks the norm's weight and bias and its hook_z the value
    # bias; a model loaded with fold_ln / fold_value_biases = False keeps them.
    kwargs = get("model_from_pretrained_kwargs") or {}
    kwargs = kwargs if isinstance(kwargs, dict) else {}
    unfolded = {"ln2_folded": ("fold_ln", "ln2"), "attn_z_folded": ("fold_value_biases", "attn_z")}
    if hook.position in unfolded and kwargs.get(unfolded[hook.position][0]) is False:
        hook = HookPoint(hook.layer, unfolded[hook.position][1])
    # SAELens feeds such an SAE hook_z[:, :, head] (d_in = d_head): that head's slice of z
    return hook.name + (f".head{head}" if head is not None else "")


def _saelens_rule(raw: dict, label: str) -> tuple[str, int | None]:
    """(architecture, k) from a SAELens config of any version."""
    arch = raw.get("architecture") or "standard"
    act = raw.get("activation_fn_str", raw.get("activation_fn")) or "relu"
    k = raw.get("k", (raw.get("activation_fn_kwargs") or {}).get("k"))
    if arch in _TRANSCODERS:
        return _TRANSCODERS[arch], None
    if arch == "gated":
        return "gated", None
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
        f"SAE {label} has {what}, which saeembed does not read; it reads standard (ReLU), topk, jumprelu, "
        "batchtopk, gated, transcoder, skip_transcoder, jumprelu_transcoder"
    )


def _saelens_threshold(t: dict, wfile: Path) -> torch.Tensor:
    if "threshold" in t:
        return t["threshold"]
    if "log_threshold" in t:  # training checkpoints keep the log
        return t["log_threshold"].float().exp()
    if "topk_threshold" in t:  # BatchTopK training checkpoints keep one scalar
        return t["topk_threshold"].float().reshape(())
    raise SAEError(f"{wfile} lacks the JumpReLU tensor 'threshold'; it holds {', '.join(sorted(t))}")


def _saelens_normalize(raw: dict) -> str:
    norm = raw.get("normalize_activations", "none")
    return norm if norm in ("constant_norm_rescale", "layer_norm") else "none"


def _saelens_input_scale(raw: dict, t: dict, label: str) -> float:
    norm = raw.get("normalize_activations", "none")
    if norm in (None, False, "none", "constant_norm_rescale", "layer_norm"):
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
    raise SAEError(f"SAE {label} uses normalize_activations={norm!r}, which saeembed does not support "
                   "(it reads none, expected_average_only_in, constant_norm_rescale, layer_norm)")
