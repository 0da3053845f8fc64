"""Capture a model's activations at one hook point and stop the forward pass right there.

A forward hook (or pre-hook) on the module that holds the hook point grabs the tensor and raises an
exception that unwinds the model call, so nothing after it runs. Hook points inside a block are found
by module name on the Hugging Face block layouts saeembed knows (GPT-2, Llama/Mistral/Qwen, Gemma,
BERT); anything else is refused with one line rather than substituted.

When the SAE was trained with a BOS token the tokenizer does not add (GPT-2), the capture puts it in
front of each window and drops its position from the output, so callers see their own windows.

An attention z hook that names a head (`layers.N.attn_z.headH`, an SAE trained on one head's z as
SAELens's hook_head_index) keeps that head's d_head slice of the concatenated heads.
"""

from __future__ import annotations

import contextlib

import torch

from saeembed.encode.models import LoadedModel
from saeembed.encode.tokens import BosRule
from saeembed.errors import ModelError
from saeembed.hookpoints import HookPoint, parse_hook

# Module names inside one block, most specific first.
_PRE_MLP_NORM = ("pre_feedforward_layernorm", "ln_2", "post_attention_layernorm")  # Gemma-2 / GPT-2 / Llama
_MID_POST_LN = ("attention.output.LayerNorm",)  # BERT: its input is attention output + residual
_MLP_OUT = ("post_feedforward_layernorm", "mlp", "output.dense")  # Gemma-2 norms the MLP output first
_OUT_PROJ = ("attn.c_proj", "self_attn.o_proj", "attention.output.dense", "attn.out_proj",
             "attn.attention.out_proj", "self_attention.dense")
_VALUE = ("attn.c_attn", "self_attn.v_proj", "attention.self.value", "attn.v_proj", "attn.attention.v_proj")
_WHAT = {"mid": ("the residual between attention and MLP", _PRE_MLP_NORM + _MID_POST_LN),
         "mlp_out": ("the MLP output", _MLP_OUT), "attn_z": ("the attention output projection", _OUT_PROJ),
         "attn_z_folded": ("the attention output projection", _OUT_PROJ),
         "ln2": ("the pre-MLP norm", _PRE_MLP_NORM), "ln2_folded": ("the pre-MLP norm", _PRE_MLP_NORM)}


class _Captured(Exception):
    """Raised inside the hook to stop the forward pass once the activations are in hand."""


class ActivationCapture:
    def __init__(self, loaded: LoadedModel, hook: str | HookPoint, *, bos: BosRule | None = None):
        self.loaded = loaded
        self.hook = hook if isinstance(hook, HookPoint) else parse_hook(hook)
        self.bos = bos or BosRule()
        n = loaded.n_layers
        if not 0 <= self.hook.layer < n:
            raise ModelError(
                f"hook {self.hook.name} is out of range: {loaded.name} has {n} blocks, "
                f"valid hooks are layers.0 … layers.{n - 1} (outputs) and layers.0.pre … layers.{n - 1}.pre (inputs)"
            )
        self._out: torch.Tensor | None = None
        self._head: slice | None = None  # one head's part of attention z
        block = loaded.blocks[self.hook.layer]
        pos = self.hook.position
        self.width = loaded.hidden_size
        if pos == "post":
            self._handle = block.register_forward_hook(self._on_output)
        elif pos == "pre":
            self._handle = block.register_forward_pre_hook(self._on_input, with_kwargs=True)
        else:
            module = find_module(loaded, self.hook)
            # what can be refused is checked before the hook is registered, so a refusal leaves none behind
            if pos in ("attn_z", "attn_z_folded"):
                self.width = _in_features(module)
            if pos == "attn_z_folded":
                self._value_bias = value_bias(loaded, self.hook, self.width)
            if getattr(self.hook, "head", None) is not None:
                self._head = head_slice(loaded, self.hook, self.width)
                self.width = self._head.stop - self._head.start
            if pos in ("mlp_out", "ln2"):
                self._handle = module.register_forward_hook(self._on_output)
            elif pos == "ln2_folded":
                self._norm = module
                self._handle = module.register_forward_pre_hook(self._on_norm_input, with_kwargs=True)
            else:  # mid, attn_z: the input of a module
                self._handle = module.register_forward_pre_hook(self._on_input, with_kwargs=True)

    def _on_output(self, module, args, output):
        self._out = output[0] if isinstance(output, (tuple, list)) else output
        raise _Captured

    def _on_input(self, module, args, kwargs):
        self._out = args[0] if args else kwargs.get("hidden_states", next(iter(kwargs.values()), None))
        raise _Captured

    def _on_norm_input(self, module, args, kwargs):
        x = (args[0] if args else kwargs.get("hidden_states", next(iter(kwargs.values()), None))).float()
        self._out = folded_norm(self._norm, x)
        raise _Captured

    @torch.inference_mode()
    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Activations [batch, seq, width] at the hook point, aligned with `input_ids`."""
        dev = self.loaded.device
        autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else contextlib.nullcontext()
        )
        ids, mask, shift = self.bos.apply(input_ids, attention_mask)
        self._out = None
        try:
            with autocast:
                self.loaded.model(input_ids=ids.to(dev), attention_mask=mask.to(dev))
        except _Captured:
            pass
        if self._out is None:
            raise ModelError(f"hook {self.hook.name} never fired on {self.loaded.name}")
        out, self._out = self._out, None
        out = out.float()
        if self.hook.position == "attn_z_folded":
            out = out - self._value_bias.to(out.device)
        if self._head is not None:
            out = out[..., self._head]
        return self.bos.undo(out, shift, input_ids.shape[1])

    def close(self) -> None:
        self._handle.remove()

    def __enter__(self) -> "ActivationCapture":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def find_module(loaded: LoadedModel, hook: HookPoint) -> torch.nn.Module:
    """The module inside block `hook.layer` that holds a within-block hook point, or ModelError."""
    block = loaded.blocks[hook.layer]
    what, names = _WHAT[hook.position]
    modules = dict(block.named_modules())
    for name in names:
        if name in modules:
            return modules[name]
    raise ModelError(
        f"hook {hook.tl_name} ({hook.name}) cannot be captured on {loaded.name}: its "
        f"{type(block).__name__} blocks have none of the modules saeembed reads {what} from "
        f"({', '.join(names)}); use a residual hook (layers.N, layers.N.pre) or another model"
    )


def value_bias(loaded: LoadedModel, hook: HookPoint, width: int) -> torch.Tensor:
    """The value projection's bias laid out as z is (heads concatenated), zeros when it has none."""
    modules = dict(loaded.blocks[hook.layer].named_modules())
    name = next((n for n in _VALUE if n in modules), None)
    if name is None:
        raise ModelError(f"hook {hook.tl_name} ({hook.name}) needs the value projection of {loaded.name}'s "
                         f"blocks to fold its bias as TransformerLens does, and saeembed finds none ({', '.join(_VALUE)})")
    bias = getattr(modules[name], "bias", None)
    if bias is None:
        return torch.zeros(width)
    bias = bias.detach().float().cpu()
    if name == "attn.c_attn":  # GPT-2 packs q, k, v into one projection
        bias = bias[2 * width : 3 * width]
    if bias.numel() != width:  # grouped-query attention: each key/value head serves several query heads
        attn = modules[name.rsplit(".", 1)[0]]
        head_dim = int(getattr(attn, "head_dim", 0) or 0)
        if not head_dim or bias.numel() % head_dim or width % bias.numel():
            raise ModelError(f"hook {hook.tl_name}: cannot lay out the value bias of {loaded.name} by heads")
        bias = bias.view(-1, head_dim).repeat_interleave(width // bias.numel(), dim=0).reshape(-1)
    return bias


def hook_width(loaded: LoadedModel, hook: str | HookPoint) -> int:
    """Width of the activations at `hook` (the attention z hook may differ from the hidden size)."""
    hp = hook if isinstance(hook, HookPoint) else parse_hook(hook)
    if hp.position not in ("attn_z", "attn_z_folded"):
        if not hp.residual and hp.layer < loaded.n_layers:
            find_module(loaded, hp)  # refuse an uncapturable hook before any work
        return loaded.hidden_size
    if hp.layer >= loaded.n_layers:
        return loaded.hidden_size  # the capture says the layer is out of range
    width = _in_features(find_module(loaded, hp))
    if getattr(hp, "head", None) is None:
        return width
    one = head_slice(loaded, hp, width)
    return one.stop - one.start


def head_slice(loaded: LoadedModel, hook: HookPoint, width: int) -> slice:
    """Where head `hook.head` lies in z (heads concatenated, each d_head wide), or ModelError."""
    cfg = loaded.model.config
    cfg = getattr(cfg, "text_config", None) or cfg
    n_heads = int(getattr(cfg, "num_attention_heads", 0) or getattr(cfg, "n_head", 0) or 0)
    if n_heads < 1 or width % n_heads:
        raise ModelError(f"hook {hook.name}: cannot split {loaded.name}'s attention z ({width} wide) into heads")
    if not 0 <= hook.head < n_heads:
        raise ModelError(f"hook {hook.name}: {loaded.name} has {n_heads} attention heads per block "
                         f"(head 0 … {n_heads - 1}), no head {hook.head}")
    d_head = width // n_heads
    return slice(hook.head * d_head, (hook.head + 1) * d_head)


def folded_norm(norm: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A LayerNorm/RMSNorm without its weight and bias (TransformerLens LayerNormPre / RMSNormPre)."""
    eps = next((float(getattr(norm, a)) for a in ("eps", "variance_epsilon", "epsilon") if hasattr(norm, a)), 1e-5)
    rms_style = "rms" in type(norm).__name__.lower()
    if not rms_style:
        x = x - x.mean(-1, keepdim=True)
    return x / (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()


def _in_features(module: torch.nn.Module) -> int:
    for attr in ("in_features", "nx"):
        if isinstance(getattr(module, attr, None), int):
            return int(getattr(module, attr))
    return int(module.weight.shape[0])  # GPT-2's Conv1D keeps weight as [in, out]
