"""The embedded default SAE, trained by saeembed on all-MiniLM-L6-v2 and shipped inside the package with
its atlas (atlas.npz: a label, score, density, exemplars and search vector per live feature)."""

from __future__ import annotations

from pathlib import Path

from saeembed.atlas_format import ATLAS_FILE, DEFAULT_SAE_DIR
from saeembed.errors import SAEError

__all__ = ["DEFAULT_SAE_DIR", "default_atlas_path", "default_sae_path", "load_default_sae"]


def default_sae_path() -> Path:
    if not (DEFAULT_SAE_DIR / "cfg.json").exists():
        raise SAEError("no default SAE ships with this install; pass --sae PATH (and --model) explicitly")
    return DEFAULT_SAE_DIR


def default_atlas_path() -> Path | None:
    """The default SAE's atlas file, when this install ships one."""
    path = DEFAULT_SAE_DIR / ATLAS_FILE
    return path if path.exists() else None


def load_default_sae():
    from saeembed.sae.formats import load_sae

    return load_sae(default_sae_path())
