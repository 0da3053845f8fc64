"""saeembed: sparse, interpretable SAE embeddings of text corpora, stored in DuckDB.

    import saeembed
    with saeembed.Store("project.duckdb") as store:
        saeembed.ingest(store, "tickets.jsonl", corpus="support", text_column="body")
        saeembed.encode_corpus(store, "support")            # default model + SAE
        emb = store.activations("support")                 # polars DataFrame

Names are imported on first use, so `import saeembed` stays fast (torch loads only when needed).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    "Store": "saeembed.store",
    "open_store": "saeembed.store",
    "ingest": "saeembed.documents",
    "read_documents": "saeembed.documents",
    "Documents": "saeembed.documents",
    "encode_corpus": "saeembed.encode.pipeline",
    "EncodeConfig": "saeembed.encode.pipeline",
    "EncodeResult": "saeembed.encode.pipeline",
    "load_model": "saeembed.encode.models",
    "SAE": "saeembed.sae.model",
    "SAEConfig": "saeembed.sae.model",
    "load_sae": "saeembed.sae.formats",
    "save_sae": "saeembed.sae.formats",
    "load_default_sae": "saeembed.sae.default",
    "TrainConfig": "saeembed.sae.train",
    "train_sae": "saeembed.sae.train",
    "evaluate_sae": "saeembed.sae.metrics",
    "SaeembedError": "saeembed.errors",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:  # for type checkers and IDEs
    from saeembed.encode.models import load_model
    from saeembed.encode.pipeline import EncodeConfig, EncodeResult, encode_corpus
    from saeembed.errors import SaeembedError
    from saeembed.documents import Documents, ingest, read_documents
    from saeembed.sae.default import load_default_sae
    from saeembed.sae.formats import load_sae, save_sae
    from saeembed.sae.metrics import evaluate_sae
    from saeembed.sae.model import SAE, SAEConfig
    from saeembed.sae.train import TrainConfig, train_sae
    from saeembed.store import Store, open_store


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'saeembed' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
