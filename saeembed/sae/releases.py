"""The release catalogue (releases.json beside this module): published SAEs by release name and SAE id, as
SAELens's pretrained_saes.yaml names them, each with its hub repository, path, model, hook, format and
context settings, and their resolution from the local Hugging Face cache.

Syntax: `release:RELEASE/SAE_ID`, e.g. `release:gpt2-small-res-jb/blocks.8.hook_resid_pre`. The prefix
always means the catalogue, never a path (write `./release:x` for a local folder of that name), and it
cannot be read as a hub id (`org/repo`): a colon is not allowed in a repository name.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

from saeembed.errors import SAEError
from saeembed.sae.files import saeembed_hook

PREFIX = "release:"
_CATALOGUE = Path(__file__).with_name("releases.json")
# the files each format needs in the SAE's folder (see loaders.py)
FORMAT_FILES = {
    "saelens": ("cfg.json", "sae_weights.safetensors"),
    "gemmascope": ("params.npz",),
    "llamascope": ("hyperparams.json", "checkpoints/final.safetensors"),
    "sparsify": ("cfg.json", "sae.safetensors"),
}
_FIELDS = ("release", "sae_id", "repo_id", "path", "model", "hook", "format", "d_in", "d_sae", "context_size",
           "prepend_bos")


@lru_cache(maxsize=1)
def _catalogue() -> dict:
    return json.loads(_CATALOGUE.read_text())["releases"]


def release_entries() -> list[dict]:
    """Every SAE of the catalogue, one dict per SAE with the keys of _FIELDS."""
    rows = []
    for name, rel in _catalogue().items():
        for sae in rel["saes"]:
            first, last = sae.get("layers") or (None, None)
            for layer in range(first, last + 1) if first is not None else [None]:
                fill = (lambda s: s.replace("{layer}", str(layer))) if layer is not None else (lambda s: s)
                rows.append({"release": name, "sae_id": fill(sae["id"]), "repo_id": rel["repo_id"],
                             "path": fill(sae["path"]), "model": rel["model"], "hook": fill(sae["hook"]),
                             "format": rel["format"], "d_in": rel.get("d_in"), "d_sae": sae.get("d_sae", rel.get("d_sae")),
                             "context_size": rel.get("context_size"), "prepend_bos": rel.get("prepend_bos")})
    return rows


def is_release(text: str) -> bool:
    return str(text).startswith(PREFIX)


def find_release(text: str) -> dict:
    """The catalogue entry that `release:RELEASE/SAE_ID` names; SAEError saying what exists otherwise."""
    spec = str(text)[len(PREFIX):]
    name, _, sae_id = spec.partition("/")
    releases = _catalogue()
    if name not in releases:
        raise SAEError(f"no release {name!r} in saeembed's catalogue; it knows {', '.join(releases)} "
                       "(saeembed sae releases lists every SAE id)")
    entries = [e for e in release_entries() if e["release"] == name]
    for entry in entries:
        if entry["sae_id"] == sae_id:
            return entry
    ids = [e["sae_id"] for e in entries]
    shown = ", ".join(ids[:8]) + (f" and {len(ids) - 8} more" if len(ids) > 8 else "")
    what = f"no SAE id {sae_id!r}" if sae_id else "no SAE id (write release:RELEASE/SAE_ID)"
    raise SAEError(f"release {name!r} has {what}; it has {shown}")


def hub_cache() -> Path:
    """The Hugging Face hub cache, read from the environment now (huggingface_hub reads it once at import)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser()
    return base / "huggingface" / "hub"


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def resolve_release(text: str) -> tuple[Path, dict]:
    """(the local folder holding the SAE's files, its catalogue entry). Looks in the local cache first;
    when the files are absent it fetches just those files, unless HF_HUB_OFFLINE is set: then, or when the
    fetch fails, one line says what to download."""
    entry = find_release(text)
    needed = FORMAT_FILES[entry["format"]]
    folder = cached_folder(entry["repo_id"], entry["path"], needed)
    if folder is not None:
        return folder, entry
    command = f"hf download {entry['repo_id']} " + " ".join(f"{entry['path']}/{f}" for f in needed)
    where = f"the Hugging Face cache at {hub_cache()}"
    if offline():
        raise SAEError(f"{text}: its files are not in {where} and HF_HUB_OFFLINE is set; "
                       f"download them where the hub is reachable with: {command}")
    try:
        from huggingface_hub import snapshot_download

        snapshot_download(entry["repo_id"], allow_patterns=[f"{entry['path']}/{f}" for f in needed],
                          cache_dir=str(hub_cache()))
    except Exception as e:  # network, auth, gated repository: one clear line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise SAEError(f"{text}: its files are not in {where} and fetching them failed ({first}); "
                       f"download them with: {command}") from None
    folder = cached_folder(entry["repo_id"], entry["path"], needed)
    if folder is None:
        raise SAEError(f"{text}: {entry['repo_id']} holds no {', '.join(needed)} under {entry['path']}")
    return folder, entry


def cached_folder(repo_id: str, path: str, needed: tuple[str, ...]) -> Path | None:
    """The snapshot folder `path` of `repo_id` in the local cache holding every file in `needed`, or None.
    The snapshot refs/main points at comes first, then the newest."""
    repo = hub_cache() / ("models--" + repo_id.replace("/", "--"))
    snapshots = repo / "snapshots"
    if not snapshots.is_dir():
        return None
    ref = repo / "refs" / "main"
    main = ref.read_text().strip() if ref.is_file() else None
    candidates = sorted(snapshots.iterdir(), key=lambda p: (p.name != main, -p.stat().st_mtime))
    for snap in candidates:
        folder = snap / path
        if all((folder / f).is_file() for f in needed):
            return folder
    return None


def apply_release(sae, entry: dict, label: str) -> None:
    """Fill what the files leave unsaid from the catalogue, and refuse files that contradict it."""
    c = sae.cfg
    hook = saeembed_hook(entry["hook"])
    if c.hook and hook and c.hook != hook:
        raise SAEError(f"{label}: its files say hook {c.hook}, the catalogue {entry['hook']}; the cached files "
                       "are not this release's")
    if entry.get("d_sae") and c.d_sae != entry["d_sae"]:
        raise SAEError(f"{label}: its files hold {c.d_sae} latents, the catalogue says {entry['d_sae']}")
    c.hook = c.hook or hook
    if c.model and c.model != entry["model"]:
        c.extra["model_in_files"] = c.model  # often a TransformerLens alias (gpt2-small) the hub cannot load
    c.model = entry["model"]
    if c.prepend_bos is None:
        c.prepend_bos = entry.get("prepend_bos")
    if c.context_size is None:
        c.context_size = entry.get("context_size")
    c.extra["release"] = {k: entry[k] for k in ("release", "sae_id", "repo_id", "path")}


def releases_table(release: str | None = None):
    """The catalogue as a polars DataFrame, one row per SAE (of one release when `release` is given)."""
    import polars as pl

    rows = release_entries()
    if release is not None:
        rows = [r for r in rows if r["release"] == release.removeprefix(PREFIX).strip("/")]
        if not rows:
            raise SAEError(f"no release {release!r} in saeembed's catalogue; it knows {', '.join(_catalogue())}")
    return pl.DataFrame({k: [r[k] for r in rows] for k in _FIELDS}, strict=False)
