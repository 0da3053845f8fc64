"""Reading the files of public SAE releases: JSON, safetensors, listings, and small weight helpers shared
by the loaders."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from saeembed.errors import SAEError
from saeembed.hookpoints import HookPoint, try_parse_hook



def fold_decoder_norm(W_enc, b_enc, W_dec):
    """Move each decoder row's norm into the encoder: same reconstruction, unit-norm decoder."""
    norm = W_dec.float().norm(dim=1)
    norm = torch.where(norm > 0, norm, torch.ones_like(norm))  # dead rows stay as they are
    return W_enc.float() * norm, b_enc.float() * norm, W_dec.float() / norm[:, None]


def saeembed_hook(name) -> str | None:
    """saeembed's hook name; one it cannot capture stays as written (encode refuses it by name)."""
    if not isinstance(name, str) or not name.strip():
        return None
    hook = try_parse_hook(name)
    return hook.name if hook else name.strip()


def tl_hook_name(hook: HookPoint) -> str:
    return hook.tl_name


def need(folder: Path, *names: str, fmt: str) -> Path:
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


def read_json(file: Path) -> dict:
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


def read_safetensors(file: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(file))
    except Exception as e:
        raise SAEError(f"cannot read {file} as safetensors: {e}") from e


def tensors(tensors: dict, file: Path, *names: str) -> list[torch.Tensor]:
    missing = [n for n in names if n not in tensors]
    if missing:
        raise SAEError(f"{file} lacks tensor(s) {', '.join(missing)}; it holds {', '.join(sorted(tensors)) or 'none'}")
    return [tensors[n] for n in names]


def positive_int(value) -> int | None:
    try:
        n = int(value)
    except (TypeError, ValueError):
        return None
    return n if n > 0 else None
