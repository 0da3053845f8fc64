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
    """Documents of one corpus (sorted doc_idx) seen through one SAE; `name` says how they were chosen."""

    corpus: CorpusInfo
    sae: SAEInfo
    doc_idx: np.ndarray
    name: str

    @property
    def n_docs(self) -> int:
        return len(self.doc_idx)


def doc_table(store: Store, corpus: str | CorpusInfo, sae: SAEInfo | None = None) -> pl.DataFrame:
    """One row per document: doc_idx, doc_id, n_chars, n_tokens (when encoded with `sae`), the
    user's metadata columns, and `cluster.NAME` per saved clustering: what a filter can name."""
    info = corpus if isinstance(corpus, CorpusInfo) else store.corpus(corpus)
    frame = store.documents(info, text=False)
    chars = store.query(
        "SELECT doc_idx, n_chars FROM documents WHERE corpus_id = ? ORDER BY doc_idx", [info.corpus_id]
    )
    frame = frame.join(chars, on="doc_idx", how="left")
    if sae is not None:
        tokens = store.query(
            "SELECT doc_idx, n_tokens FROM encoded_docs WHERE corpus_id = ? AND sae_key = ?",
            [info.corpus_id, sae.sae_key],
        )
        frame = frame.join(tokens, on="doc_idx", how="left")
    from saeembed.analysis.cluster import cluster_columns  # saved clusterings as `cluster.NAME` columns

    clusters = cluster_columns(store, info)
    if clusters is not None:
        frame = frame.join(clusters, on="doc_idx", how="left")
    return frame.sort("doc_idx")


def select(
    store: Store, corpus: str, *, where: str | None = None, sae: str | None = None, encoded_only: bool = True
) -> Selection:
    """Documents of `corpus` matching `where` (a filter over doc_id, n_chars, n_tokens and metadata)."""
    info = store.corpus(corpus)
    s = store.encoded_sae(info, sae)
    table = doc_table(store, info, s)
    if encoded_only:
        table = table.filter(pl.col("n_tokens").is_not_null())
    name = corpus
    if where:
        table = parse_filter(where, table.columns).apply(table)
        name = f"{corpus} where {where}"
    return Selection(info, s, table["doc_idx"].to_numpy().astype(np.int64), name)


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
    pos = np.searchsorted(selection.doc_idx, doc)
    keep = (pos < len(selection.doc_idx)) & (selection.doc_idx[np.minimum(pos, len(selection.doc_idx) - 1)] == doc)
    if len(selection.doc_idx) == 0:
        keep = np.zeros(len(doc), dtype=bool)
    data = np.ones(int(keep.sum()), dtype=np.float32) if binary else np.asarray(val[keep], dtype=np.float32)
    return sp.csr_matrix(
        (data, (pos[keep], np.asarray(feat[keep]))), shape=(selection.n_docs, selection.sae.d_sae)
    )


def check_features(sae: SAEInfo, features: list[int]) -> list[int]:
    """Feature ids a user typed, checked against the SAE's width."""
    from saeembed.errors import UnknownFeatureError

    bad = [f for f in features if not 0 <= int(f) < sae.d_sae]
    if bad:
        raise UnknownFeatureError(f"feature {bad[0]} does not exist: SAE {sae.sae_hash} has features 0..{sae.d_sae - 1}")
    return [int(f) for f in features]


def require_docs(selection: Selection) -> Selection:
    if selection.n_docs == 0:
        raise InputError(f"no encoded documents in {selection.name!r}; check the filter or run `saeembed encode`")
    return selection
