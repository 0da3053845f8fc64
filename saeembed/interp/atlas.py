"""A feature atlas for an SAE: names for every live feature, built once and carried beside the weights.

`build_atlas` is behind `saeembed sae atlas SAE --data FILES… --out DIR`: the files (a seeded sample of
documents mixed across them, or all) go into a work store in DIR (`atlas_work.duckdb`) and are encoded
with the SAE (resumable, as every encode is); then every feature that fires is labelled offline
(saeembed.interp.atlas_build, a checkpoint after each chunk) and DIR/atlas.npz is written
(saeembed.atlas_format). Copied beside the SAE's weights, every store that uses the SAE shows its names.
`import_labels` adds a published label set (feature → description JSON) to an atlas.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from saeembed.atlas_format import ATLAS_FILE, Atlas, find_atlas, read_atlas, write_atlas
from saeembed.config import AtlasConfig
from saeembed.errors import InputError, SAEError
from saeembed.interp.atlas_build import CHECKPOINT, atlas_from_records, label_pass, read_checkpoint

WORK_STORE = "atlas_work.duckdb"


@dataclass
class AtlasBuild:
    path: Path | None  # the atlas written (None while unfinished)
    live: int  # features that fire on the sampled documents
    labelled: int
    docs: int  # documents encoded
    seconds: float
    finished: bool
    files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"atlas": str(self.path) if self.path else None, "live_features": self.live,
                "labelled": self.labelled, "coverage": round(self.labelled / max(self.live, 1), 4),
                "documents": self.docs, "seconds": round(self.seconds, 1), "finished": self.finished,
                "files": self.files}


Progress = Callable[[str, int, int], None]  # (stage, done, total): stage is "encode NAME" or "label"


def build_atlas(sae, files: list[str], out: str | Path, config: AtlasConfig | None = None, *,
                progress: Progress | None = None, stop_after: int | None = None, embed=None,
                embed_model: str | None = None) -> AtlasBuild:
    """Build (or resume) the atlas of `sae` (a path, hub id or SAE; None: the default SAE) from `files`
    into folder `out`. stop_after: label at most this many features in this call (then call again)."""
    from saeembed.encode.pipeline import encode_corpus, resolve_sae
    from saeembed.store import Store

    cfg = config or AtlasConfig()
    sae_obj = resolve_sae(sae)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    paths = _data_files(files)
    with Store(out / WORK_STORE) as store:
        _sample_into(store, paths, cfg)
        from saeembed.config import EncodeConfig

        for name in store.corpora()["corpus"].to_list():
            def tick(docs, _tokens, total, name=name):
                if progress is not None and total:
                    progress(f"encode {name}", docs, total)
            encode_corpus(store, name, sae=sae_obj, config=EncodeConfig(device=cfg.device, exemplars_per_feature=20),
                          progress=tick)
        info = store.register_sae(sae_obj)
        lp = label_pass(store, info, out, chunk=cfg.chunk, background=cfg.background, exemplars=cfg.exemplars,
                        stop_after=stop_after, scorer=_scorer(cfg.scorer, embed), progress=(lambda d, t: progress("label", d, t)) if progress else None)
        n_docs = int(store.encoded_doc_counts(info.sae_key, store.encoded_corpus_ids(info.sae_key))["n"].sum())
        path = None
        if lp.finished:
            records = read_checkpoint(out / CHECKPOINT, info.sae_hash)
            embed, embed_model = _embedder(embed, embed_model)
            meta = {"built_from": [p.name for p in paths], "documents": n_docs, "sample": cfg.docs or "all",
                    "live_features": lp.total,
                    "seed": cfg.seed, "labeller": "offline-phrase",
                    "scorer": f"embedding AUROC, {cfg.scorer} embeddings of windows ±12 chars around the token",
                    "built_seconds": round(time.perf_counter() - t0, 1)}
            path = write_atlas(atlas_from_records(records, info, embed=embed, embed_model=embed_model, meta=meta),
                               out / ATLAS_FILE)
    return AtlasBuild(path, lp.total, lp.done, n_docs, time.perf_counter() - t0, lp.finished, [str(p) for p in paths])


def _scorer(kind: str, embed):
    from saeembed.interp.scoring import EmbeddingScorer, static_embedder

    if embed is not None:
        return EmbeddingScorer(embed)
    if kind not in ("static", "sentence"):
        raise InputError(f"unknown atlas scorer {kind!r}; use static or sentence")
    return EmbeddingScorer(static_embedder()) if kind == "static" else EmbeddingScorer()


def _embedder(embed, embed_model):
    if embed is not None:
        return embed, embed_model or "custom"
    from saeembed.encode.dense import get_embedder

    e = get_embedder(embed_model)
    return e.embed, e.name


def _data_files(files: list[str]) -> list[Path]:
    paths: list[Path] = []
    for f in files:
        p = Path(f)
        if p.is_dir():  # a folder: its data files (csv, jsonl, json, parquet, txt), not hidden ones
            paths += sorted(q for q in p.iterdir() if q.is_file() and not q.name.startswith(".")
                            and q.suffix.lower() in (".csv", ".tsv", ".jsonl", ".json", ".parquet", ".txt"))
        elif p.is_file():
            paths.append(p)
        else:
            raise InputError(f"--data {f}: no such file or folder")
    if not paths:
        raise InputError("--data names no files to build the atlas from")
    return paths


def _sample_into(store, paths: list[Path], cfg: AtlasConfig) -> None:
    """Each file becomes a corpus (named after it) holding its share of the seeded sample; a resumed build
    finds them already there and adds nothing."""
    from saeembed.documents import read_documents

    per_file = None if not cfg.docs else max(1, cfg.docs // len(paths))
    for i, p in enumerate(paths):
        name = p.stem if p.stem not in [q.stem for q in paths[:i]] else f"{p.stem}_{i}"
        if store.has_corpus(name):
            continue
        docs = read_documents(p, text_column=cfg.text_column)
        frame = docs.frame.select("doc_id", "text")  # metadata is per corpus: only which file travels
        if per_file is not None and frame.height > per_file:
            frame = frame.sample(per_file, seed=cfg.seed, shuffle=True)
        store.add_corpus(name, replace(docs, frame=frame, metadata_columns=[]))


def sae_atlas(sae) -> Atlas | None:
    """The atlas an SAE (saeembed.sae.SAE) carries beside its weights, or the default SAE's, or None."""
    return find_atlas(sae.identity, sae.cfg.source)


def atlas_path_for(sae, out: str | Path | None) -> Path:
    """Where `sae atlas` writes: --out, else the SAE's own folder."""
    if out is not None:
        return Path(out)
    src = Path(sae.cfg.source or "")
    if src.is_file():
        src = src.parent
    if not src.is_dir():
        raise InputError("the SAE was not read from a local folder: say where the atlas goes with --out DIR")
    return src


def install_atlas(built: Path, sae) -> Path | None:
    """Copy a built atlas beside the SAE's weights (when they are a local folder not already holding it)."""
    src = Path(sae.cfg.source or "")
    src = src.parent if src.is_file() else src
    if not src.is_dir() or (src / ATLAS_FILE).resolve() == built.resolve():
        return None
    shutil.copyfile(built, src / ATLAS_FILE)
    return src / ATLAS_FILE


# --- published label sets ------------------------------------------------------------------------------

def parse_label_file(path: str | Path, d_sae: int) -> dict[int, str]:
    """feature → description from a JSON file: {"12": "text", …}, or a list of objects with a feature id
    ("index", "feature", "latent" or "id") and a text ("description", "explanation", "label"), as
    Neuronpedia's explanation exports are."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(f"--import-labels {path}: not a readable JSON file ({str(e)[:80]})") from None
    if isinstance(data, dict) and isinstance(data.get("explanations"), list):
        data = data["explanations"]
    pairs = []
    if isinstance(data, dict):
        pairs = list(data.items())
    elif isinstance(data, list):
        for item in data:
            if not isinstance(item, dict):
                continue
            fid = next((item[k] for k in ("index", "feature", "latent", "id") if k in item), None)
            text = next((item[k] for k in ("description", "explanation", "label") if isinstance(item.get(k), str)), None)
            pairs.append((fid, text))
    out: dict[int, str] = {}
    for fid, text in pairs:
        try:
            f = int(fid)
        except (TypeError, ValueError):
            continue
        if isinstance(text, str) and text.strip() and 0 <= f < d_sae:
            out.setdefault(f, " ".join(text.split())[:300])
    if not out:
        raise InputError(f"--import-labels {path}: found no feature → description pairs for features 0..{d_sae - 1}")
    return out


def import_labels(sae, label_file: str | Path, atlas_dir: str | Path, *, embed=None, embed_model: str | None = None,
                  source: str = "imported") -> tuple[Path, int]:
    """Add a published label set to the atlas in `atlas_dir` (started empty when there is none); an imported
    label replaces the offline one of its feature. Returns (atlas path, labels imported)."""
    atlas_dir = Path(atlas_dir)
    path = atlas_dir / ATLAS_FILE if atlas_dir.is_dir() or not atlas_dir.suffix else atlas_dir
    labels = parse_label_file(label_file, sae.d_sae)
    embed, embed_model = _embedder(embed, embed_model)
    if path.exists():
        atlas = read_atlas(path, sae_hash=sae.identity)
        if atlas.embed_model and atlas.embed_model != embed_model:
            raise SAEError(f"the atlas's vectors come from {atlas.embed_model}; import with the same model")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        atlas = Atlas(sae.identity, sae.d_sae, np.zeros(0, np.int32), [], [], np.zeros(0, np.float32),
                      np.zeros(0, np.float32), np.zeros(0, bool), np.zeros(0, np.float32), [], np.zeros((0, 0), np.float16),
                      [], {"built_from": [], "labeller": "imported"})
    rows = {int(f): i for i, f in enumerate(atlas.features)}
    vecs = embed(list(labels.values()))
    dim = vecs.shape[1]
    old = atlas.vectors if atlas.vectors.size else np.zeros((len(atlas), dim), np.float16)
    new_feats = [f for f in labels if f not in rows]
    n = len(atlas) + len(new_feats)
    pad = len(new_feats)
    a = replace(
        atlas, features=np.concatenate([atlas.features, np.asarray(new_feats, np.int32)]),
        labels=atlas.labels + [""] * pad, sources=atlas.sources + [""] * pad,
        score=np.concatenate([atlas.score, np.full(pad, np.nan, np.float32)]),
        score_hard=np.concatenate([atlas.score_hard, np.full(pad, np.nan, np.float32)]),
        weak=np.concatenate([atlas.weak, np.zeros(pad, bool)]),
        density=np.concatenate([atlas.density, np.full(pad, np.nan, np.float32)]),
        descriptions=atlas.descriptions + [""] * pad, vectors=np.concatenate([old, np.zeros((pad, dim), np.float16)]),
        exemplars=atlas.exemplars + [[] for _ in range(pad)],
        meta=dict(atlas.meta, embed_model=embed_model, imported=str(Path(label_file).name)))
    rows = {int(f): i for i, f in enumerate(a.features)}
    for (f, text), v in zip(labels.items(), vecs):
        i = rows[f]
        a.labels[i], a.sources[i], a.descriptions[i] = text, source, text
        a.score[i] = a.score_hard[i] = np.nan  # the offline score measured another label
        a.weak[i] = False
        a.vectors[i] = v.astype(np.float16)
    assert len(a.labels) == n
    return write_atlas(a, path), len(labels)
