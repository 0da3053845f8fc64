"""Helpers shared by the search/cluster benchmarks: where the shared data is, a scratch store per
benchmark (outside the repo), ingest+encode with the default model and SAE, machine description."""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SAEEMBED_SHARED_DATA", ROOT.parent / "shared" / "data"))
SCRATCH = Path(os.environ.get("SAEEMBED_BENCH_DIR", Path(tempfile.gettempdir()) / "saeembed-bench"))


def need(path: Path) -> Path:
    if not path.exists():
        print(f"skipped: {path} not found (the shared data folder is absent)")
        sys.exit(0)
    return path


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def build_store(name: str, rows: list[dict], *, corpus: str, dense: bool = True):
    """A scratch store holding `rows` (each with doc_id, text, metadata) encoded with the default model
    and SAE, plus dense embeddings. Reused when it already holds the corpus fully encoded."""
    from saeembed.documents import ingest
    from saeembed.encode.dense import corpus_embeddings
    from saeembed.encode.pipeline import encode_corpus
    from saeembed.store import Store

    SCRATCH.mkdir(parents=True, exist_ok=True)
    store = Store(SCRATCH / f"{name}.duckdb")
    if not store.has_corpus(corpus):
        src = SCRATCH / f"{name}.jsonl"
        src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        ingest(store, src, corpus=corpus, id_column="doc_id")
    t = time.perf_counter()
    encode_corpus(store, corpus)
    t_enc = time.perf_counter() - t
    t = time.perf_counter()
    if dense:
        corpus_embeddings(store, corpus)
    return store, {"encode_s": t_enc, "dense_s": time.perf_counter() - t}


def machine() -> str:
    import torch

    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores visible, torch threads "
            f"{torch.get_num_threads()}, python {platform.python_version()}, shared with other jobs")
