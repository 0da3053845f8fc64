"""The DuckDB store (schema, migrations, writers, readers)."""

from saeembed.store.schema import SCHEMA_VERSION
from saeembed.store.store import DEFAULT_STORE, CorpusInfo, SAEInfo, Store, open_store, quote_ident

__all__ = ["SCHEMA_VERSION", "DEFAULT_STORE", "CorpusInfo", "SAEInfo", "Store", "open_store", "quote_ident"]
