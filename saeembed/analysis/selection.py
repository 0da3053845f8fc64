"""Which documents an analysis looks at, and their SAE embeddings as a sparse matrix.

A selection is a corpus plus an optional user filter (`--where`), parsed by saeembed.filters and
applied to the corpus's document table in polars, so user text never reaches SQL. The embeddings
come out of DuckDB as scipy CSR (documents × SAE latents), never dense.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import scipy.sparse as sp

from saeembed.errors import InputError
from saeembed.filters import parse_filter
from saeembed.store import CorpusInfo, SAEInfo, Store


@dataclass(frozen=True)
class Selection:
    """Documents of one corpus seen through one SAE; `name` says how they were chosen. doc_idx is sorted,
    except where an analysis needs an order (paired documents)."""

    corpus: CorpusInfo
    sae: SAEInfo
    doc_idx: np.ndarray
    name: str

    @property
    def n_docs(self) -> int:
        return len(self.doc_idx)


BUILTIN_COLUMNS = ("doc_idx", "doc_id", "n_chars", "n_tokens")


def filter_columns(info: CorpusInfo, store: Store | None = None) -> list[str]:
    """Columns a filter may name (see Store.filter_columns)."""
    return store.filter_columns(info) if store is not None else ["doc_id", "n_chars", "n_tokens", *info.metadata_columns]


def doc_table(store: Store, corpus: str | CorpusInfo, sae: SAEInfo | None = None,
              columns: list[str] | None = None) -> pl.DataFrame:
    """One row per document (see Store.doc_table)."""
    return store.doc_table(corpus, sae, columns)


def select(
    store: Store, corpus: str, *, where: str | None = None, sae: str | None = None, encoded_only: bool = True
) -> Selection:
    """Documents of `corpus` matching `where` (a filter over doc_id, n_chars, n_tokens and metadata)."""
    sels, _ = _select(store, corpus, [where], sae=sae, encoded_only=encoded_only)
    return sels[0]


def select_table(
    store: Store, corpus: str, *, where: str | None = None, sae: str | None = None, columns: list[str] = ()
) -> tuple[Selection, pl.DataFrame]:
    """select(store, corpus, where=where, sae=sae), plus doc_idx and `columns` of the selected
    documents (in doc_idx order), read in the same query."""
    sels, tables = _select(store, corpus, [where], sae=sae, columns=columns)
    return sels[0], tables[0].select("doc_idx", *[c for c in dict.fromkeys(columns) if c != "doc_idx"])


def select_many(
    store: Store, corpus: str, wheres: list[str | None], *, sae: str | None = None
) -> list[Selection]:
    """select(store, corpus, where=w, sae=sae) for each w (None: the whole corpus), reading the
    document table once (two slices of a large corpus: one query instead of two)."""
    return _select(store, corpus, wheres, sae=sae)[0]


def _select(store: Store, corpus: str, wheres: list[str | None], *, sae: str | None = None, columns=(),
            encoded_only: bool = True) -> tuple[list[Selection], list[pl.DataFrame]]:
    """One read of the document table (only the columns the filters and `columns` name), then each
    filter applied to it: a Selection and its rows per entry of `wheres`."""
    info = store.corpus(corpus)
    s = store.encoded_sae(info, sae)
    allowed = filter_columns(info, store) if any(wheres) else None
    flts = [parse_filter(w, allowed) if w else None for w in wheres]
    needed = set().union(*(f.columns for f in flts if f is not None)) | {c for c in columns if c != "doc_idx"}
    table = doc_table(store, info, s, columns=sorted(needed | ({"n_tokens"} if encoded_only else set())))
    if encoded_only:
        table = table.filter(pl.col("n_tokens").is_not_null())
    sels, tables = [], []
    for where, flt in zip(wheres, flts):
        t = table if flt is None else flt.apply(table)
        name = corpus if flt is None else f"{corpus} where {where}"
        sels.append(Selection(info, s, t["doc_idx"].to_numpy().astype(np.int64), name))
        tables.append(t)
    return sels, tables


def embedding_matrix(
    store: Store, selection: Selection, *, features: list[int] | None = None, binary: bool = False
) -> sp.csr_matrix:
    """CSR [selection.n_docs, d_sae]: max activation per (document, feature); 1.0 where active if
    binary. Rows follow selection.doc_idx; only `features` are read when given."""
    rows = store.con.sql(
        "SELECT doc_idx, feature, value FROM activations WHERE corpus_id = ? AND sae_key = ? "
        "AND (? OR feature IN (SELECT unnest(?)))",
        params=[selection.corpus.corpus_id, selection.sae.sae_key, features is None, list(features or [])],
    ).fetchnumpy()
    doc, feat, val = rows["doc_idx"], rows["feature"], rows["value"]
    order = np.argsort(selection.doc_idx, kind="stable")  # rows may be in any order (e.g. paired)
    ordered = selection.doc_idx[order]
    pos = np.searchsorted(ordered, doc)
    if len(ordered) == 0:
        keep = np.zeros(len(doc), dtype=bool)
    else:
        keep = (pos < len(ordered)) & (ordered[np.minimum(pos, len(ordered) - 1)] == doc)
    data = np.ones(int(keep.sum()), dtype=np.float32) if binary else np.asarray(val[keep], dtype=np.float32)
    return sp.csr_matrix(
        (data, (order[pos[keep]], np.asarray(feat[keep]))), shape=(selection.n_docs, selection.sae.d_sae)
    )


def check_features(sae: SAEInfo, features: list[int]) -> list[int]:
    """Feature ids a user typed, checked against the SAE's width."""
    return sae.check_features(features)


def require_docs(selection: Selection) -> Selection:
    if selection.n_docs == 0:
        raise InputError(f"no encoded documents in {selection.name!r}; check the filter or run `saeembed encode`")
    return selection
