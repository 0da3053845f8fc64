"""Reads behind the feature browser and the HTML reports: per-feature statistics, co-occurrence, one
document's activations, exemplar rows with their spans, saved clusterings read back."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import polars as pl

from saeembed.errors import StoreError
from saeembed.store.records import CorpusInfo, SAEInfo


class BrowseMixin:
    """Store methods that read what the browser and the reports show."""

    # --- the feature browser ----------------------------------------------------------------------

    def browsed_sae(self, prefix: str | None = None) -> SAEInfo:
        """The one SAE that has encoded corpora (whose hash starts with `prefix`, when given)."""
        rows = self._all("SELECT sae_key, sae_hash FROM saes WHERE sae_key IN (SELECT sae_key FROM encodings) "
                         "ORDER BY sae_key")
        if prefix:
            rows = [r for r in rows if r[1].startswith(prefix)]
        if not rows:
            raise StoreError("the store holds no encoded corpus" + (f" with SAE {prefix!r}" if prefix else
                                                                    "; run `saeembed encode` first"))
        if len(rows) > 1:
            raise StoreError(f"the store holds several SAEs ({', '.join(r[1] for r in rows)}); pick one with --sae")
        return self.sae_info(rows[0][0])

    def sae_data_version(self, sae_key: int) -> tuple:
        """Changes whenever an encoding or a label of the SAE is written: what cached statistics key on."""
        enc = self._all("SELECT count(*), sum(n_docs), max(finished_at)::VARCHAR FROM encodings WHERE sae_key = ?",
                        [sae_key])[0]
        lab = self._all("SELECT count(*), max(created_at)::VARCHAR FROM feature_labels WHERE sae_key = ?",
                        [sae_key])[0]
        return (sae_key, *enc, *lab)

    def encoded_corpus_sizes(self, sae_key: int) -> pl.DataFrame:
        """corpus_id, corpus, n_docs (documents encoded with the SAE), by corpus name."""
        return self.query(
            "SELECT c.corpus_id, c.name AS corpus, count(e.doc_idx) AS n_docs FROM corpora c "
            "JOIN encoded_docs e ON e.corpus_id = c.corpus_id AND e.sae_key = ? GROUP BY ALL ORDER BY c.name",
            [sae_key])

    def feature_stats_by_corpus(self, sae_key: int) -> pl.DataFrame:
        """corpus_id, feature, docs (where it fires), max_value, mean_value: one row per (corpus, feature)."""
        return self.query(
            "SELECT corpus_id, feature, count(*) AS docs, max(value)::DOUBLE AS max_value, avg(value) AS mean_value "
            "FROM activations WHERE sae_key = ? GROUP BY ALL", [sae_key])

    def cooccurring_features(self, sae_key: int, feature: int, *, min_support: int = 1) -> pl.DataFrame:
        """feature, together: other features firing in the same documents as `feature` (in at least
        `min_support` of them), over every corpus encoded with the SAE."""
        return self.query(
            """
            WITH f AS (SELECT corpus_id, doc_idx FROM activations WHERE sae_key = ? AND feature = ?)
            SELECT a.feature, count(*) AS together FROM activations a JOIN f USING (corpus_id, doc_idx)
            WHERE a.sae_key = ? AND a.feature <> ? GROUP BY a.feature HAVING count(*) >= ?
            """, [sae_key, feature, sae_key, feature, min_support])

    def document_at(self, corpus_id: int, doc_idx: int) -> pl.DataFrame:
        """doc_id, text, corpus of one document (no rows when there is none)."""
        return self.query("SELECT d.doc_id, d.text, c.name AS corpus FROM documents d JOIN corpora c USING (corpus_id) "
                          "WHERE d.corpus_id = ? AND d.doc_idx = ?", [corpus_id, doc_idx])

    def document_by_id(self, corpus: str, doc_id: str) -> pl.DataFrame:
        """corpus_id, doc_idx, doc_id, text, corpus of the document the user calls `doc_id` in corpus `corpus`
        (no rows when there is none)."""
        return self.query("SELECT d.corpus_id, d.doc_idx, d.doc_id, d.text, c.name AS corpus FROM documents d "
                          "JOIN corpora c USING (corpus_id) WHERE c.name = ? AND d.doc_id = ? ORDER BY d.doc_idx "
                          "LIMIT 1", [corpus, doc_id])

    def encoding_setup(self, corpus_id: int, sae_key: int) -> dict | None:
        """How a corpus was encoded with an SAE (model, hook, pooling params, the SAE's source), enough to
        recompute one document's token activations; None when it is not encoded."""
        rows = self._all("SELECT e.model, e.hook, e.params, s.source FROM encodings e JOIN saes s USING (sae_key) "
                         "WHERE e.corpus_id = ? AND e.sae_key = ?", [corpus_id, sae_key])
        if not rows:
            return None
        model, hook, params, source = rows[0]
        return {"model": model, "hook": hook, "params": json.loads(params or "{}"), "sae_source": source}

    def document_activations(self, sae_key: int, corpus_id: int, doc_idx: int) -> pl.DataFrame:
        """feature, value, active_tokens, span_start, span_end of one document, strongest first."""
        return self.query("SELECT feature, value::DOUBLE AS value, active_tokens, span_start, span_end FROM activations "
                          "WHERE sae_key = ? AND corpus_id = ? AND doc_idx = ? ORDER BY value DESC",
                          [sae_key, corpus_id, doc_idx])

    # --- report data ------------------------------------------------------------------------------

    def features_scope(self, corpus: str | None, sae: str | None = None) -> tuple[SAEInfo, list[str]]:
        """The SAE and corpora a features report covers: `corpus` with its SAE, or (without one) every
        corpus encoded with the store's only SAE."""
        if corpus:
            return self.encoded_sae(corpus, sae), [corpus]
        info = self._only_sae(sae)
        names = self._all("SELECT c.name FROM encodings e JOIN corpora c USING (corpus_id) WHERE e.sae_key = ? "
                          "ORDER BY c.name", [info.sae_key])
        return info, [r[0] for r in names]

    def exemplar_rows(self, sae_key: int, features: list[int], *, corpus_id: int | None = None,
                      per_feature: int = 3) -> pl.DataFrame:
        """The strongest stored exemplars of each feature (of one corpus, or all): feature, corpus, doc_id,
        value, rel (value over the feature's strongest exemplar), text, span_start, span_end, corpus_id, doc_idx."""
        where, corpus_param = "", []
        if corpus_id is not None:
            where, corpus_param = " AND x.corpus_id = ?", [corpus_id]
        return self.query(
            f"""
            WITH top AS (
                SELECT feature, max(value) AS vmax FROM exemplars
                WHERE sae_key = ? AND feature IN (SELECT unnest(?)) GROUP BY feature)
            SELECT x.feature, c.name AS corpus, d.doc_id, x.value, x.value / nullif(t.vmax, 0) AS rel,
                   d.text, x.span_start, x.span_end, x.corpus_id, x.doc_idx
            FROM exemplars x
            JOIN top t USING (feature)
            JOIN documents d ON d.corpus_id = x.corpus_id AND d.doc_idx = x.doc_idx
            JOIN corpora c ON c.corpus_id = x.corpus_id
            WHERE x.sae_key = ?{where}
            QUALIFY row_number() OVER (PARTITION BY x.feature ORDER BY x.value DESC, x.corpus_id, x.rank) <= ?
            ORDER BY x.feature, x.value DESC
            """,
            [sae_key, [int(f) for f in features], sae_key, *corpus_param, per_feature],
        )

    def strongest_in_docs(self, info: CorpusInfo, sae: SAEInfo, doc_idx, features: list[int], *,
                     per_feature: int = 2) -> pl.DataFrame:
        """Like exemplar_rows, but the strongest documents among `doc_idx` of one corpus (the exemplars table
        holds corpus-wide tops, which may lie outside a slice); rel is over the feature's strongest exemplar."""
        feats = [int(f) for f in features]
        docs = pa.table({"doc_idx": np.asarray(doc_idx, dtype=np.int32)})
        with self.registered("_win_docs", docs):
            return self.query(
                """
                WITH top AS (SELECT feature, max(value) AS vmax FROM exemplars
                             WHERE sae_key = ? AND feature IN (SELECT unnest(?)) GROUP BY feature)
                SELECT a.feature::BIGINT AS feature, ? AS corpus, d.doc_id, a.value::DOUBLE AS value,
                       (a.value / nullif(greatest(t.vmax, a.value), 0))::DOUBLE AS rel, d.text,
                       a.span_start, a.span_end, a.corpus_id::BIGINT AS corpus_id, a.doc_idx::BIGINT AS doc_idx
                FROM activations a
                JOIN _win_docs s ON a.doc_idx = s.doc_idx
                JOIN documents d ON d.corpus_id = a.corpus_id AND d.doc_idx = a.doc_idx
                LEFT JOIN top t ON t.feature = a.feature
                WHERE a.corpus_id = ? AND a.sae_key = ? AND a.feature IN (SELECT unnest(?))
                QUALIFY row_number() OVER (PARTITION BY a.feature ORDER BY a.value DESC, a.doc_idx) <= ?
                ORDER BY a.feature, a.value DESC
                """,
                [sae.sae_key, feats, info.name, info.corpus_id, sae.sae_key, feats, per_feature],
            )

    def feature_spans(self, info: CorpusInfo, sae: SAEInfo, doc_idx: list[int], features: list[int]) -> pl.DataFrame:
        """doc_idx, feature, span_start, span_end where any of `features` fires in any of `doc_idx`."""
        return self.query(
            "SELECT doc_idx, feature, span_start, span_end FROM activations WHERE corpus_id = ? AND sae_key = ? "
            "AND doc_idx IN (SELECT unnest(?)) AND feature IN (SELECT unnest(?))",
            [info.corpus_id, sae.sae_key, doc_idx, features])

    def count_docs_with_any(self, corpus_id: int, sae_key: int, features: list[int], doc_idx: list[int]) -> int:
        """How many of `doc_idx` have at least one of `features` firing."""
        return int(self._one("SELECT count(DISTINCT doc_idx) FROM activations WHERE corpus_id = ? AND sae_key = ? "
                             "AND feature IN (SELECT unnest(?)) AND doc_idx IN (SELECT unnest(?))",
                             [corpus_id, sae_key, features, doc_idx]))
