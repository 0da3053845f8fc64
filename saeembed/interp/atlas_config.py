"""How an atlas is built (light: the command line reads it at start-up)."""

from __future__ import annotations

from dataclasses import dataclass

from saeembed.config import setting


@dataclass
class AtlasConfig:
    """How an atlas is built."""

    docs: int | None = setting(6000, "Documents to sample, mixed evenly across the --data files (seeded); 0: all.")
    seed: int = setting(0, "Seed of the document sample and the example sampling.")
    exemplars: int = setting(5, "Top exemplars kept per feature.")
    chunk: int = setting(64, "Features labelled per step; a checkpoint is written after each.")
    background: int = setting(400, "Background windows the label statistics are contrasted with.")
    device: str = setting("auto", "Where the model and SAE run while encoding: cpu, cuda, mps or auto.")
    text_column: str = setting("text", "Text column of the --data files.")
    scorer: str = setting("static", "How labels are scored: static (the sentence model's word-piece embeddings averaged; "
                          "fast on CPU) or sentence (the full sentence model; slow without a GPU).")
