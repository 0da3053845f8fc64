"""The embedded default SAE, trained by saeembed on all-MiniLM-L6-v2 and shipped inside the package."""

from __future__ import annotations

from pathlib import Path

from saeembed.errors import SAEError

DEFAULT_SAE_DIR = Path(__file__).resolve().parent.parent / "default_sae"


def default_sae_path() -> Path:
    if not (DEFAULT_SAE_DIR / "cfg.json").exists():
        raise SAEError("no default SAE ships with this install; pass --sae PATH (and --model) explicitly")
    return DEFAULT_SAE_DIR


def load_default_sae():
    from saeembed.sae.formats import load_sae

    return load_sae(default_sae_path())
