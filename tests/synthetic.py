"""Stores with planted sparse embeddings, written through the same store calls an encode uses, so
analyses can be tested against answers known by construction (no model needed)."""

from __future__ import annotations

import polars as pl

from saeembed.documents import Documents
from saeembed.store import CorpusInfo, SAEInfo, Store
from tests.conftest import make_sae


def register_sae(store: Store, d_sae: int = 16, *, d_in: int = 8, seed: int = 0) -> SAEInfo:
    return store.register_sae(make_sae(d_in, d_sae, seed=seed))


def write_corpus(
    store: Store,
    sae: SAEInfo,
    name: str,
    docs: list,
    *,
    texts: list[str] | None = None,
    meta: dict[str, list] | None = None,
    n_tokens: list[int] | None = None,
    ids: list[str] | None = None,
) -> CorpusInfo:
    """A corpus whose document i fires exactly docs[i]: a list of features (value 1.0) or a
    {feature: value} dict. Every activation's span covers the whole text."""
    n = len(docs)
    texts = texts or [f"{name} document {i}" for i in range(n)]
    frame = pl.DataFrame({"doc_id": ids or [f"{name}{i}" for i in range(n)], "text": texts, **(meta or {})})
    info = store.add_corpus(name, Documents(frame, "text", "id", list((meta or {}).keys()), "synthetic", 0))
    store.begin_encoding(info, sae, "synthetic-model", "layers.1", {})
    rows = []
    for i, d in enumerate(docs):
        items = d.items() if isinstance(d, dict) else ((f, 1.0) for f in d)
        rows.extend((i, int(f), float(v), 1, 0, len(texts[i])) for f, v in items)
    acts = pl.DataFrame(
        rows,
        schema={"doc_idx": pl.Int32, "feature": pl.Int32, "value": pl.Float32, "active_tokens": pl.Int32,
                "span_start": pl.Int32, "span_end": pl.Int32},
        orient="row",
    )
    stats = pl.DataFrame({"doc_idx": list(range(n)), "n_tokens": n_tokens or [10] * n, "n_windows": [1] * n},
                         schema={"doc_idx": pl.Int32, "n_tokens": pl.Int32, "n_windows": pl.Int32})
    store.write_encoded(info, sae, acts, stats)
    store.finish_encoding(info, sae)
    return store.corpus(name)
