"""The atlas file an SAE may carry beside its weights: names for its features.

One compressed `atlas.npz` (no pickles) per SAE folder. Per live feature: its label and where the label
came from (offline phrase, imported set, LLM), the label's score (AUROC against random windows and,
separately, against similar windows where the feature does not fire), whether the label is weak, its
density (share of the build corpus's documents it fires on), a few top exemplars (window text and the
activating span in it), the description text text search embeds, and that text's sentence vector
(float16). The file names the SAE it belongs to by content hash; an atlas for another SAE is refused.

This module sits below the store: the store reads atlases (labels, description vectors) without
importing the SAE or interpretation layers.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from saeembed.errors import SAEError

ATLAS_FILE = "atlas.npz"
FORMAT = "saeembed-atlas"
VERSION = 1
DEFAULT_SAE_DIR = Path(__file__).resolve().parent / "default_sae"


@dataclass
class Atlas:
    sae_hash: str
    d_sae: int
    features: np.ndarray  # int32 [n], ascending
    labels: list[str]
    sources: list[str]  # offline | imported | llm
    score: np.ndarray  # float32 [n], AUROC vs random non-activating windows (nan: not scored)
    score_hard: np.ndarray  # float32 [n], AUROC vs similar non-activating windows
    weak: np.ndarray  # bool [n]
    density: np.ndarray  # float32 [n], share of the build corpus's documents it fires on (nan: unknown)
    descriptions: list[str]  # the text the vector embeds
    vectors: np.ndarray  # float16 [n, dim], unit rows; dim 0 when none
    exemplars: list[list[dict]]  # per feature: {"text", "start", "end", "value"}
    meta: dict = field(default_factory=dict)  # embed_model, build record, …

    def __len__(self) -> int:
        return len(self.features)

    @property
    def embed_model(self) -> str | None:
        return self.meta.get("embed_model")

    def row(self, feature: int) -> int | None:
        i = int(np.searchsorted(self.features, feature))
        return i if i < len(self.features) and self.features[i] == feature else None

    def entry(self, feature: int) -> dict | None:
        """One feature's record, JSON-safe."""
        i = self.row(feature)
        if i is None:
            return None
        return {"feature": int(self.features[i]), "label": self.labels[i], "label_source": self.sources[i],
                "score": _num(self.score[i]), "score_hard": _num(self.score_hard[i]), "weak": bool(self.weak[i]),
                "density": _num(self.density[i]), "description": self.descriptions[i],
                "exemplars": self.exemplars[i]}


def _num(x) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), 4)


def _blob(obj) -> np.ndarray:
    return np.frombuffer(json.dumps(obj, ensure_ascii=False).encode("utf-8"), dtype=np.uint8)


def _unblob(arr: np.ndarray):
    return json.loads(arr.tobytes().decode("utf-8"))


def write_atlas(atlas: Atlas, path: str | os.PathLike) -> Path:
    """Write atomically (a temporary file, then a rename): a crash never leaves half an atlas."""
    path = Path(path)
    if path.is_dir():
        path = path / ATLAS_FILE
    order = np.argsort(atlas.features, kind="stable")

    def pick(seq):
        return [seq[i] for i in order]

    meta = dict(atlas.meta, format=FORMAT, version=VERSION, sae_hash=atlas.sae_hash, d_sae=int(atlas.d_sae))
    vectors = np.asarray(atlas.vectors, dtype=np.float16)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(
        tmp, meta=_blob(meta), feature=np.asarray(atlas.features, dtype=np.int32)[order],
        labels=_blob(pick(atlas.labels)), sources=_blob(pick(atlas.sources)),
        score=np.asarray(atlas.score, dtype=np.float32)[order],
        score_hard=np.asarray(atlas.score_hard, dtype=np.float32)[order],
        weak=np.asarray(atlas.weak, dtype=bool)[order], density=np.asarray(atlas.density, dtype=np.float32)[order],
        descriptions=_blob(pick(atlas.descriptions)),
        vectors=vectors[order] if len(vectors) else np.zeros((0, 0), np.float16),
        exemplars=_blob(pick(atlas.exemplars)),
    )
    os.replace(tmp, path)
    _CACHE.pop(str(path.resolve()), None)
    return path


def read_atlas(path: str | os.PathLike, *, sae_hash: str | None = None) -> Atlas:
    """Read an atlas file (or the atlas in an SAE folder). sae_hash: refuse an atlas made for another SAE."""
    path = Path(path)
    if path.is_dir():
        path = path / ATLAS_FILE
    if not path.is_file():
        raise SAEError(f"no atlas at {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = _unblob(z["meta"])
            if meta.get("format") != FORMAT:
                raise SAEError(f"{path} is not a saeembed atlas")
            if int(meta.get("version", 0)) > VERSION:
                raise SAEError(f"{path} is a newer atlas (version {meta['version']}); upgrade saeembed to read it")
            atlas = Atlas(
                sae_hash=meta["sae_hash"], d_sae=int(meta["d_sae"]), features=z["feature"].astype(np.int32),
                labels=_unblob(z["labels"]), sources=_unblob(z["sources"]), score=z["score"], score_hard=z["score_hard"],
                weak=z["weak"], density=z["density"], descriptions=_unblob(z["descriptions"]), vectors=z["vectors"],
                exemplars=_unblob(z["exemplars"]), meta=meta)
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as e:
        raise SAEError(f"{path} is not a readable atlas ({type(e).__name__}: {str(e)[:100]})") from None
    if sae_hash is not None and atlas.sae_hash != sae_hash:
        raise SAEError(f"the atlas at {path} was built for SAE {atlas.sae_hash}, not {sae_hash}; "
                       "build one for this SAE with `saeembed sae atlas`")
    return atlas


_CACHE: dict[str, tuple[float, Atlas]] = {}


def cached_atlas(path: Path) -> Atlas | None:
    """An atlas file read once per process (re-read when the file changes); None when absent or unreadable."""
    try:
        key, mtime = str(path.resolve()), path.stat().st_mtime
    except OSError:
        return None
    hit = _CACHE.get(key)
    if hit is None or hit[0] != mtime:
        try:
            hit = (mtime, read_atlas(path))
        except SAEError:
            return None
        _CACHE[key] = hit
    return hit[1]


def atlas_candidates(source: str | None) -> list[Path]:
    """Where an SAE's atlas may lie: beside the weights it was loaded from, then the default SAE's folder."""
    out = []
    if source:
        p = Path(source)
        if p.is_file():
            p = p.parent
        if p.is_dir():
            out.append(p / ATLAS_FILE)
    out.append(DEFAULT_SAE_DIR / ATLAS_FILE)
    return out


def find_atlas(sae_hash: str, source: str | None = None) -> Atlas | None:
    """The atlas built for this SAE (by content hash) among the candidate places, or None."""
    for path in atlas_candidates(source):
        atlas = cached_atlas(path)
        if atlas is not None and atlas.sae_hash == sae_hash:
            return atlas
    return None
