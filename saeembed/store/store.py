"""The DuckDB store: one file per project holding corpora, SAEs, sparse activations and exemplars.

`Store` is assembled from one module per job (base: connection and schema; corpora; encodings;
sharding; tokens; dense; features). It is the only code that holds SQL text or touches the connection.
"""

from __future__ import annotations

import os

from saeembed.store.base import DEFAULT_STORE, StoreBase
from saeembed.store.corpora import INTERNAL_COLUMNS, CorporaMixin
from saeembed.store.dense import DenseMixin
from saeembed.store.encodings import POOLING_PARAMS, EncodingsMixin
from saeembed.store.features import FeaturesMixin
from saeembed.store.records import CorpusInfo, SAEInfo
from saeembed.store.sharding import ShardingMixin
from saeembed.store.sql import quote_ident
from saeembed.store.browse import BrowseMixin
from saeembed.store.labels import LabelsMixin
from saeembed.store.results import ResultsMixin
from saeembed.store.scan import ScanMixin
from saeembed.store.search import SearchMixin
from saeembed.store.selection import SelectionMixin
from saeembed.store.tables import TablesMixin
from saeembed.store.tokens import TokensMixin

__all__ = ["DEFAULT_STORE", "INTERNAL_COLUMNS", "POOLING_PARAMS", "CorpusInfo", "SAEInfo", "Store", "open_store",
           "quote_ident"]


class Store(StoreBase, ShardingMixin, CorporaMixin, EncodingsMixin, DenseMixin, FeaturesMixin, TablesMixin,
            SelectionMixin, ScanMixin, ResultsMixin, LabelsMixin, BrowseMixin, SearchMixin, TokensMixin):
    """A saeembed project file. Open with `Store(path)` or `open_store(path)`; close when done."""


def open_store(path: str | os.PathLike = DEFAULT_STORE, *, read_only: bool = False) -> Store:
    return Store(path, read_only=read_only)
