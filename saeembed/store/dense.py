"""Cached dense sentence embeddings (the baseline and query matching)."""

from __future__ import annotations

import numpy as np

from saeembed.store.records import CorpusInfo


class DenseMixin:
    """Store methods for dense embeddings."""

    # --- dense embeddings (baseline / query matching) ----------------------------------------------

    def add_dense_embeddings(self, info: CorpusInfo, model: str, doc_idx, vectors) -> None:
        """Cache sentence embeddings (rows aligned with doc_idx) for (corpus, model)."""
        import pyarrow as pa

        vectors = np.asarray(vectors, dtype=np.float32)
        table = pa.table({
            "doc_idx": pa.array(np.asarray(doc_idx, dtype=np.int32)),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1]),
        })
        with self.transaction(), self.registered("_dense", table):
            self.con.execute(
                "INSERT INTO dense_embeddings SELECT ?, ?, doc_idx, vector::FLOAT[] FROM _dense "
                "WHERE doc_idx NOT IN (SELECT doc_idx FROM dense_embeddings WHERE corpus_id = ? AND model = ?)",
                [info.corpus_id, model, info.corpus_id, model],
            )

    def dense_embedded_docs(self, info: CorpusInfo, model: str) -> np.ndarray:
        """doc_idx of the documents whose embedding by `model` is cached."""
        return self.query("SELECT doc_idx FROM dense_embeddings WHERE corpus_id = ? AND model = ?",
                          [info.corpus_id, model])["doc_idx"].to_numpy()

    def dense_embeddings(self, info: CorpusInfo, model: str, *, dim: int, doc_idx=None) -> np.ndarray:
        """[n_docs, dim] float32 in doc_idx order, or [len(doc_idx), dim] in the given order; rows never
        embedded are zeros."""
        wanted = None if doc_idx is None else np.asarray(doc_idx, dtype=np.int64)
        rows = self.con.sql(
            "SELECT doc_idx, vector FROM dense_embeddings WHERE corpus_id = ? AND model = ? "
            "AND (? OR doc_idx IN (SELECT unnest(?))) ORDER BY doc_idx",
            params=[info.corpus_id, model, wanted is None, [] if wanted is None else wanted.tolist()],
        ).to_arrow_table()
        target = np.arange(info.n_docs) if wanted is None else wanted
        out = np.zeros((len(target), dim), dtype=np.float32)
        if rows.num_rows:
            idx = rows.column("doc_idx").to_numpy()  # sorted
            flat = rows.column("vector").combine_chunks().flatten().to_numpy().reshape(len(idx), dim)
            pos = np.minimum(np.searchsorted(idx, target), len(idx) - 1)
            hit = idx[pos] == target
            out[hit] = flat[pos[hit]]
        return out
