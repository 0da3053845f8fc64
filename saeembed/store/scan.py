"""Reads of the sparse activations for the analyses: an Arrow scan for the streaming passes (diff),
the active (doc, feature) pairs (correlate), per-feature counts (frequency), token lengths and the
rows behind exemplars."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import polars as pl
import pyarrow as pa

from saeembed.store.base import DAMAGE_ERRORS


class ScanMixin:
    """Store methods that hand the analyses the activations they count."""

    def activation_batches(self, corpus_id: int, sae_key: int, batch_rows: int = 1 << 20) -> Iterator[pa.RecordBatch]:
        """The (doc_idx int32, feature int32, value float32) rows of one corpus and SAE as Arrow batches,
        decoded by DuckDB on its threads, so a pass over them holds one batch at a time. Shards are read
        too (the `activations` view); a shard gone or damaged since the store was opened is a StoreError."""
        try:
            reader = self.con.sql(
                "SELECT doc_idx::INTEGER AS doc_idx, feature::INTEGER AS feature, value::REAL AS value "
                "FROM activations WHERE corpus_id = ? AND sae_key = ?",
                params=[corpus_id, sae_key],
            ).to_arrow_reader(batch_rows)
            yield from reader
        except DAMAGE_ERRORS as e:
            raise self._damaged(e) from None

    def active_pairs(self, corpus_id: int, sae_key: int) -> tuple[np.ndarray, np.ndarray]:
        """(doc_idx, feature) of every active entry of one corpus and SAE: two int arrays, no values."""
        rows = self.con.sql(
            "SELECT doc_idx, feature FROM activations WHERE corpus_id = ? AND sae_key = ?",
            params=[corpus_id, sae_key],
        ).fetchnumpy()
        return np.asarray(rows["doc_idx"]), np.asarray(rows["feature"])

    def token_counts(self, corpus_id: int, sae_key: int) -> tuple[np.ndarray, np.ndarray]:
        """(doc_idx int64, n_tokens) of the documents of a corpus this SAE has encoded."""
        rows = self.con.sql(
            "SELECT doc_idx, n_tokens FROM encoded_docs WHERE sae_key = ? AND corpus_id = ?",
            params=[sae_key, corpus_id],
        ).fetchnumpy()
        return np.asarray(rows["doc_idx"], dtype=np.int64), rows["n_tokens"]

    def feature_counts(self, sae_key: int, corpus_ids: list[int]) -> pl.DataFrame:
        """Per (corpus_id, feature) that fires: docs, mean_value and max_value, counted in DuckDB."""
        return self.query(
            """
            SELECT a.corpus_id, a.feature, count(*) AS docs, avg(a.value) AS mean_value, max(a.value) AS max_value
            FROM activations a WHERE a.sae_key = ? AND a.corpus_id IN (SELECT unnest(?))
            GROUP BY ALL
            """,
            [sae_key, list(corpus_ids)],
        )

    def exemplar_spans(self, corpus_id: int, sae_key: int, pairs: pl.DataFrame) -> pl.DataFrame:
        """(feature, doc_idx, span_start, span_end, text) for the given (feature, doc_idx) rows: the span
        of the row's strongest token and its document's text; only those documents are read."""
        # semi join on doc_idx alone: DuckDB then pushes the few wanted doc_idx into the scan (row groups
        # skipped); a (doc_idx, feature) join would read every row. The pairs are picked out after.
        docs = pa.table({"doc_idx": pairs["doc_idx"].unique().cast(pl.Int32).to_arrow()})
        with self.registered("_diff_ex_docs", docs):
            rows = self.query(
                """
                SELECT a.feature::BIGINT AS feature, a.doc_idx::INTEGER AS doc_idx, a.span_start, a.span_end
                FROM activations a SEMI JOIN _diff_ex_docs w ON a.doc_idx = w.doc_idx
                WHERE a.corpus_id = ? AND a.sae_key = ?
                """,
                [corpus_id, sae_key],
            ).join(pairs, on=["feature", "doc_idx"], how="semi")
            texts = self.query(
                "SELECT d.doc_idx::INTEGER AS doc_idx, d.text FROM documents d SEMI JOIN _diff_ex_docs w "
                "ON d.doc_idx = w.doc_idx WHERE d.corpus_id = ?",
                [corpus_id],
            )
        return rows.join(texts, on="doc_idx", how="inner")
