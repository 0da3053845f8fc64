"""Capture the residual stream at one hook point and stop the forward pass right there.

A forward hook on block N grabs its output (or a pre-hook its input) and raises an exception that
unwinds the model call, so blocks after N never run.
"""

from __future__ import annotations

import contextlib

import torch

from saeembed.encode.models import LoadedModel
from saeembed.errors import ModelError
from saeembed.hookpoints import HookPoint, parse_hook


class _Captured(Exception):
    """Raised inside the hook to stop the forward pass once the activations are in hand."""


class ActivationCapture:
    def __init__(self, loaded: LoadedModel, hook: str | HookPoint):
        self.loaded = loaded
        self.hook = hook if isinstance(hook, HookPoint) else parse_hook(hook)
        n = loaded.n_layers
        if not 0 <= self.hook.layer < n:
            raise ModelError(
                f"hook {self.hook.name} is out of range: {loaded.name} has {n} blocks, "
                f"valid hooks are layers.0 … layers.{n - 1} (outputs) and layers.0.pre … layers.{n - 1}.pre (inputs)"
            )
        self._out: torch.Tensor | None = None
        block = loaded.blocks[self.hook.layer]
        if self.hook.position == "post":
            self._handle = block.register_forward_hook(self._on_output)
        else:
            self._handle = block.register_forward_pre_hook(self._on_input, with_kwargs=True)

    def _on_output(self, module, args, output):
        self._out = output[0] if isinstance(output, (tuple, list)) else output
        raise _Captured

    def _on_input(self, module, args, kwargs):
        self._out = args[0] if args else kwargs["hidden_states"]
        raise _Captured

    @torch.inference_mode()
    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Hidden states [batch, seq, d] at the hook point."""
        dev = self.loaded.device
        autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else contextlib.nullcontext()
        )
        self._out = None
        try:
            with autocast:
                self.loaded.model(input_ids=input_ids.to(dev), attention_mask=attention_mask.to(dev))
        except _Captured:
            pass
        if self._out is None:
            raise ModelError(f"hook {self.hook.name} never fired on {self.loaded.name}")
        out, self._out = self._out, None
        return out.float()

    def close(self) -> None:
        self._handle.remove()

    def __enter__(self) -> "ActivationCapture":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
