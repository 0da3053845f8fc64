"""Which documents an analysis looks at, and their SAE embeddings as a sparse matrix.

A selection is a corpus plus an optional user filter (`--where`), which the store parses and applies
to the corpus's document table in polars, so user text never reaches SQL. The embeddings come out of
the store as scipy CSR (documents × SAE latents), never dense.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import scipy.sparse as sp

from saeembed.errors import InputError
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


def select(
    store: Store, corpus: str, *, where: str | None = None, sae: str | None = None, encoded_only: bool = True
) -> Selection:
    """Documents of `corpus` matching `where` (a filter over doc_id, n_chars, n_tokens and metadata)."""
    sels, _ = _select(store, corpus, [where], sae=sae, encoded_only=encoded_only)
    return sels[0]


def select_table(
    store: Store, corpus: str, *, where: str | None = None, sae: str | None = None, columns: list[str] = ()
) -> tuple[Selection, pl.DataFrame]:
    """Like select(store, corpus, where=where, sae=sae), plus doc_idx and `columns` of the selected
    documents (in doc_idx order), read in the same query."""
    sels, tables = _select(store, corpus, [where], sae=sae, columns=columns)
    return sels[0], tables[0].select("doc_idx", *[c for c in dict.fromkeys(columns) if c != "doc_idx"])


def select_many(
    store: Store, corpus: str, wheres: list[str | None], *, sae: str | None = None
) -> list[Selection]:
    """Like select(store, corpus, where=w, sae=sae) for each w (None: the whole corpus), reading the
    document table once (two slices of a large corpus: one query instead of two)."""
    return _select(store, corpus, wheres, sae=sae)[0]


def _select(store: Store, corpus: str, wheres: list[str | None], *, sae: str | None = None, columns=(),
            encoded_only: bool = True) -> tuple[list[Selection], list[pl.DataFrame]]:
    """A Selection and its rows per entry of `wheres` (see Store.select_documents)."""
    info = store.corpus(corpus)
    s = store.encoded_sae(info, sae)
    tables = store.select_documents(info, s, wheres, columns=columns, encoded_only=encoded_only)
    sels = [Selection(info, s, t["doc_idx"].to_numpy().astype(np.int64), f"{corpus} where {w}" if w else corpus)
            for w, t in zip(wheres, tables)]
    return sels, tables


def embedding_matrix(
    store: Store, selection: Selection, *, features: list[int] | None = None, binary: bool = False
) -> sp.csr_matrix:
    """CSR [selection.n_docs, d_sae]: max activation per (document, feature); 1.0 where active if
    binary. Rows follow selection.doc_idx; only `features` are read when given."""
    # A small part of a corpus (a sample, a filter) is read alone rather than filtered after reading it all.
    part = selection.doc_idx if selection.n_docs < selection.corpus.n_docs // 4 else None
    rows = store.activation_rows(selection.corpus, selection.sae, features, part)
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


def require_docs(selection: Selection) -> Selection:
    if selection.n_docs == 0:
        raise InputError(f"no encoded documents in {selection.name!r}; check the filter or run `saeembed encode`")
    return selection
