"""The first look: ingest the bundled sample corpora, encode them, and show each corpus's top features.

Uses the embedded default model + SAE, so it runs offline on a laptop in about a minute.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from saeembed.analysis.frequency import distinctive_features
from saeembed.encode.models import LoadedModel, load_model
from saeembed.encode.pipeline import EncodeConfig, EncodeResult, resolve_sae, sae_model_name, encode_corpus
from saeembed.documents import ingest
from saeembed.store import Store

SAMPLE_DIR = Path(__file__).resolve().parent.parent / "sample_data"
SAMPLE_CORPORA = {
    "support_tickets": "support_tickets.jsonl",
    "product_reviews": "product_reviews.jsonl",
    "toxicity": "toxicity.jsonl",
    "instructions": "instructions.jsonl",
}


@dataclass
class DemoResult:
    store: str
    encodes: list[EncodeResult] = field(default_factory=list)
    top_features: dict[str, pl.DataFrame] = field(default_factory=dict)


def find_sample_dir() -> Path:
    """sample_data/ beside the package (a source checkout), else the current folder's."""
    for candidate in (SAMPLE_DIR, Path.cwd() / "sample_data"):
        if (candidate / "support_tickets.jsonl").exists():
            return candidate
    from saeembed.errors import InputError

    raise InputError("sample_data/ was not found; run the demo from a checkout of saeembed")


def run_demo(store_path: str | Path = "demo.duckdb", *, top: int = 8, model=None, sae=None, hook=None,
             progress_factory=None, sample_dir: Path | None = None) -> DemoResult:
    """Ingest (idempotently), encode (resumably) and summarise the sample corpora.

    progress_factory(corpus) -> a context manager yielding an encode progress callback (or None).
    """
    sample_dir = sample_dir or find_sample_dir()
    result = DemoResult(str(store_path))
    # Load the SAE and model once for all four corpora.
    sae = resolve_sae(sae)
    model = model if isinstance(model, LoadedModel) else load_model(model if model is not None else sae_model_name(sae))
    with Store(store_path) as store:
        for corpus, filename in SAMPLE_CORPORA.items():
            if not store.has_corpus(corpus):
                ingest(store, sample_dir / filename, corpus=corpus, id_column="id")
        for corpus in SAMPLE_CORPORA:
            with progress_factory(corpus) if progress_factory else nullcontext() as bar:
                result.encodes.append(
                    encode_corpus(store, corpus, model=model, sae=sae, hook=hook, config=EncodeConfig(), progress=bar)
                )
        for corpus in SAMPLE_CORPORA:
            # What sets each corpus apart from the other three, with its strongest exemplar.
            others = [c for c in SAMPLE_CORPORA if c != corpus]
            result.top_features[corpus] = distinctive_features(store, corpus, others, top=top)
    return result
