"""saeembed: sparse, interpretable SAE embeddings of text corpora, stored in DuckDB."""

__version__ = "0.1.0"
