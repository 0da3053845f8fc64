"""What interpretation reads and writes: feature labels, the LLM call cache, cached description vectors,
and the activation samples and counts that labelling, feature matching and LLM assistance draw on."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import polars as pl

from saeembed.store.records import CorpusInfo
from saeembed.store.sql import quote_ident


class LabelsMixin:
    """Store methods for labels, the LLM cache, feature description vectors and labelling samples."""

    # --- feature labels ---------------------------------------------------------------------------

    def labels(self, sae_key: int, features: list[int] | None = None, *, descriptions: bool = False,
               atlas: bool = True, corpus: str | None = None) -> pl.DataFrame:
        """The newest label of each feature: feature, label, label_source, score, weak (the label scored near
        chance or was copied from an instruction in its examples: see saeembed.interp.labels), and with
        `descriptions`, description: the LLM's longer explanation, '' when there is none.

        Where the SAE carries an atlas (saeembed.atlas_format), features the user has not labelled get the
        atlas label (label_source "atlas"; description: the atlas description). User labels win.

        With `corpus`, a label learned on that corpus ends with the metadata values its documents
        over-represent there, e.g. "(stdlib=false 83% vs 48%)"; other corpora never see them."""
        user = self._user_labels(sae_key, features, descriptions, corpus)
        book = self.sae_atlas(sae_key) if atlas else None
        if book is None:
            return user
        return pl.concat([user, _atlas_frame(book, features, set(user["feature"].to_list()), descriptions)
                          .cast(user.schema)]).sort("feature")

    def sae_atlas(self, sae_key: int):
        """The atlas (saeembed.atlas_format.Atlas) of a stored SAE, or None when it carries none."""
        from saeembed.atlas_format import find_atlas

        info = self.find_sae(sae_key)  # labels may outlive their SAE's row: then there is no atlas
        return find_atlas(info.sae_hash, info.source) if info is not None else None

    def _user_labels(self, sae_key: int, features: list[int] | None, descriptions: bool,
                     corpus: str | None = None) -> pl.DataFrame:
        description = ", coalesce(json_extract_string(details, '$.description'), '') AS description" if descriptions else ""
        frame = self.query(
            f"""
            SELECT feature, label, source AS label_source, score,
                   coalesce(json_extract_string(details, '$.weak') IS NOT NULL, false) AS weak{description},
                   coalesce(json_extract_string(details, '$.metadata'), '[]') AS _metadata
            FROM feature_labels
            WHERE sae_key = ? AND (? OR feature IN (SELECT unnest(?)))
            QUALIFY row_number() OVER (PARTITION BY feature ORDER BY created_at DESC) = 1
            """,
            [sae_key, features is None, features or []],
        )
        if corpus is not None and not frame.is_empty():
            frame = frame.with_columns(pl.Series("label", [
                label + metadata_context(meta, corpus)
                for label, meta in zip(frame["label"].to_list(), frame["_metadata"].to_list())], dtype=pl.Utf8))
        return frame.drop("_metadata")

    def save_labels(self, sae_key: int, model: str, labels: list[tuple[int, str, str, float | None, dict]]) -> None:
        """Add labels, each (feature, label, source, score, details), in one transaction; older labels stay."""
        with self.transaction():
            for feature, label, source, score, details in labels:
                self.con.execute(
                    "INSERT INTO feature_labels (sae_key, feature, label, source, score, model, details) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [sae_key, feature, label, source, score, model, json.dumps(details, default=float)],
                )

    def description_fingerprint(self, sae_key: int) -> tuple:
        """Changes whenever a label or an exemplar of this SAE changes (cheap: small tables)."""
        row = self.query(
            "SELECT (SELECT count(*) FROM feature_labels WHERE sae_key = ?) AS a, "
            "(SELECT max(created_at)::VARCHAR FROM feature_labels WHERE sae_key = ?) AS b, "
            "(SELECT count(*) FROM exemplars WHERE sae_key = ?) AS c, "
            "(SELECT sum(hash(corpus_id, feature, doc_idx, value)) FROM exemplars WHERE sae_key = ?) AS d",
            [sae_key] * 4,
        )
        return tuple(row.row(0))

    # --- LLM call cache ---------------------------------------------------------------------------

    def cached_llm_call(self, request_hash: str) -> tuple[str, int | None, int | None] | None:
        """(response, prompt_tokens, completion_tokens) stored for a request, or None."""
        rows = self._all("SELECT response, prompt_tokens, completion_tokens FROM llm_cache WHERE request_hash = ?",
                         [request_hash])
        return rows[0] if rows else None

    def cache_llm_call(self, request_hash: str, model: str, request: str, response: str, prompt_tokens: int,
                       completion_tokens: int) -> None:
        """Store (or replace) one LLM call's request and response."""
        self.con.execute(
            "INSERT OR REPLACE INTO llm_cache (request_hash, model, request, response, prompt_tokens, completion_tokens) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [request_hash, model, request, response, prompt_tokens, completion_tokens],
        )

    def forget_llm_call(self, request_hash: str) -> None:
        """Drop one cached LLM call (an answer found unusable, so the next run asks again)."""
        self.con.execute("DELETE FROM llm_cache WHERE request_hash = ?", [request_hash])

    # --- feature description vectors --------------------------------------------------------------

    def feature_embeddings(self, sae_key: int, model: str) -> dict[tuple[int, str, str], np.ndarray]:
        """Cached description vectors by (feature, source, text_hash). An atlas made with this sentence model
        adds its description vectors under its labels (source "label", the label's hash), so the features
        it names are never embedded per store."""
        out = self._atlas_vectors(sae_key, model)
        cached = self.con.sql(
            "SELECT feature, source, text_hash, vector FROM feature_embeddings WHERE sae_key = ? AND model = ?",
            params=[sae_key, model],
        ).to_arrow_table()
        if not cached.num_rows:
            return out
        vecs = cached.column("vector").combine_chunks().flatten().to_numpy().reshape(cached.num_rows, -1)
        keys = zip(cached.column("feature").to_pylist(), cached.column("source").to_pylist(),
                   cached.column("text_hash").to_pylist())
        return out | {key: vecs[i] for i, key in enumerate(keys)}

    def _atlas_vectors(self, sae_key: int, model: str) -> dict[tuple[int, str, str], np.ndarray]:
        book = self.sae_atlas(sae_key)
        if book is None or book.embed_model != model or not book.vectors.size:
            return {}
        vecs = book.vectors.astype(np.float32)
        return {(int(f), "label", text_hash(lab)): vecs[i] for i, (f, lab) in enumerate(zip(book.features, book.labels))}

    def save_feature_embeddings(self, sae_key: int, model: str, features, sources: list[str], hashes: list[str],
                                vectors: np.ndarray) -> None:
        """Cache description vectors; one row per (feature, source), so a changed text replaces the old one."""
        import pyarrow as pa

        table = pa.table({
            "feature": pa.array(np.asarray(features).astype(np.int32)),
            "source": pa.array(list(sources)),
            "text_hash": pa.array(hashes),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(np.asarray(vectors, np.float32).reshape(-1)),
                                                        vectors.shape[1]),
        })
        with self.transaction(), self.registered("_fvec", table):
            self.con.execute(
                "DELETE FROM feature_embeddings WHERE sae_key = ? AND model = ? AND (feature, source) IN "
                "(SELECT (feature, source) FROM _fvec)",
                [sae_key, model],
            )
            self.con.execute(
                "INSERT INTO feature_embeddings SELECT ?, ?, source, feature, text_hash, vector::FLOAT[] FROM _fvec",
                [sae_key, model],
            )

    # --- scope and counts -------------------------------------------------------------------------

    def sae_keys(self, prefix: str | None = None) -> list[int]:
        """Keys of the stored SAEs whose hash starts with `prefix` (all without one), oldest first."""
        rows = self._all("SELECT sae_key, sae_hash FROM saes ORDER BY sae_key")
        return [k for k, h in rows if not prefix or h.startswith(prefix)]

    def encoded_corpus_ids(self, sae_key: int) -> list[int]:
        """Ids of the corpora encoded with the SAE."""
        return [r[0] for r in self._all("SELECT corpus_id FROM encodings WHERE sae_key = ? ORDER BY corpus_id",
                                        [sae_key])]

    def corpus_names(self, corpus_ids: list[int]) -> dict[int, str]:
        return dict(self._all("SELECT corpus_id, name FROM corpora WHERE corpus_id IN (SELECT unnest(?))",
                              [corpus_ids]))

    def firing_features(self, sae_key: int, corpus_ids: list[int], limit: int | None = None) -> list[int]:
        """Features that fire on at least one document of the corpora, most documents first."""
        rows = self.query(
            "SELECT feature, count(*) AS n FROM activations WHERE sae_key = ? AND corpus_id IN (SELECT unnest(?)) "
            "GROUP BY feature ORDER BY n DESC, feature" + (" LIMIT ?" if limit else ""),
            [sae_key, corpus_ids] + ([limit] if limit else []),
        )
        return rows["feature"].to_list()

    def feature_doc_totals(self, sae_key: int, corpus_ids: list[int], features: list[int]) -> pl.DataFrame:
        """feature, n: documents of the corpora each feature fires on."""
        return self.query(
            "SELECT feature, count(*) AS n FROM activations WHERE sae_key = ? AND corpus_id IN (SELECT unnest(?)) "
            "AND feature IN (SELECT unnest(?)) GROUP BY feature",
            [sae_key, corpus_ids, features],
        )

    def feature_docs_by_corpus(self, sae_key: int, corpus_ids: list[int], features: list[int]) -> pl.DataFrame:
        """feature, corpus_id, n: documents of each corpus each feature fires on."""
        return self.query(
            "SELECT feature, corpus_id, count(*) AS n FROM activations WHERE sae_key = ? "
            "AND corpus_id IN (SELECT unnest(?)) AND feature IN (SELECT unnest(?)) GROUP BY ALL",
            [sae_key, corpus_ids, features],
        )

    def encoded_doc_counts(self, sae_key: int, corpus_ids: list[int]) -> pl.DataFrame:
        """corpus_id, n: documents of each corpus encoded with the SAE."""
        return self.query(
            "SELECT corpus_id, count(*) AS n FROM encoded_docs WHERE sae_key = ? AND corpus_id IN (SELECT unnest(?)) "
            "GROUP BY corpus_id", [sae_key, corpus_ids])

    def metadata_value_counts(self, info: CorpusInfo, column: str, *, max_values: int) -> pl.DataFrame | None:
        """value (as text), n: documents per value of a metadata column; None unless the column has between
        2 and max_values distinct values."""
        qc = quote_ident(column)
        distinct = self._one(f"SELECT count(DISTINCT {qc}) FROM {info.meta_table}")
        if not 1 < distinct <= max_values:
            return None
        return self.query(f"SELECT CAST({qc} AS VARCHAR) AS value, count(*) AS n FROM {info.meta_table} GROUP BY ALL")

    def feature_docs_by_value(self, info: CorpusInfo, sae_key: int, column: str, features: list[int]) -> pl.DataFrame:
        """feature, value (as text), n: documents with each value of a metadata column each feature fires on."""
        return self.query(
            f"SELECT a.feature, CAST(m.{quote_ident(column)} AS VARCHAR) AS value, count(*) AS n FROM activations a "
            f"JOIN {info.meta_table} m ON m.doc_idx = a.doc_idx "
            "WHERE a.sae_key = ? AND a.corpus_id = ? AND a.feature IN (SELECT unnest(?)) GROUP BY ALL",
            [sae_key, info.corpus_id, features],
        )

    def share_firing_any(self, corpus_id: int, sae_key: int, features: list[int]) -> float:
        """Share of the corpus's encoded documents where any of `features` fires."""
        firing, encoded = self._all(
            "SELECT (SELECT count(DISTINCT doc_idx) FROM activations WHERE corpus_id = ? AND sae_key = ? "
            "AND feature IN (SELECT unnest(?))), (SELECT count(*) FROM encoded_docs WHERE corpus_id = ? AND sae_key = ?)",
            [corpus_id, sae_key, features, corpus_id, sae_key],
        )[0]
        return firing / max(encoded, 1)

    def cluster_feature_docs(self, corpus_id: int, sae_key: int, assignments: pl.DataFrame) -> pl.DataFrame:
        """cluster, feature, docs: documents of each cluster (assignments: doc_idx, cluster) each feature fires on."""
        with self.registered("_interp_clusters", assignments):
            return self.query(
                """
                SELECT c.cluster, a.feature, count(*) AS docs FROM activations a
                JOIN _interp_clusters c ON c.doc_idx = a.doc_idx
                WHERE a.corpus_id = ? AND a.sae_key = ? GROUP BY ALL
                """,
                [corpus_id, sae_key],
            )

    def near_feature_docs(self, corpus_id: int, sae_key: int, nearest: list[int], pool: list[int] | None) -> pl.DataFrame:
        """feature, near_docs, docs: for each feature firing among the `nearest` documents, how many of them it
        fires on and how many documents of the pool (default: the whole corpus)."""
        return self.query(
            """
            WITH near AS (SELECT unnest(?::BIGINT[]) AS doc_idx),
            pool AS (SELECT unnest(?::BIGINT[]) AS doc_idx),
            df AS (SELECT feature, count(*) AS docs FROM activations
                   WHERE corpus_id = ? AND sae_key = ? AND (NOT ? OR doc_idx IN (SELECT doc_idx FROM pool))
                   GROUP BY feature)
            SELECT a.feature, count(*) AS near_docs, any_value(df.docs) AS docs
            FROM activations a JOIN near USING (doc_idx) JOIN df USING (feature)
            WHERE a.corpus_id = ? AND a.sae_key = ?
            GROUP BY a.feature
            """,
            [nearest, pool or [], corpus_id, sae_key, pool is not None, corpus_id, sae_key],
        )

    # --- exemplars and samples for explaining features --------------------------------------------

    def exemplar_features(self, corpus_id: int, sae_key: int) -> list[int]:
        """Features with stored exemplars in the corpus (those that fire in it)."""
        return [r[0] for r in self._all(
            "SELECT DISTINCT feature FROM exemplars WHERE corpus_id = ? AND sae_key = ? ORDER BY feature",
            [corpus_id, sae_key])]

    def exemplar_texts(self, sae_key: int, features: list[int] | None, per_feature: int) -> pl.DataFrame:
        """feature, text, span_start, span_end: each feature's strongest exemplars over every corpus (all
        features without a list)."""
        return self.query(
            """
            SELECT x.feature, d.text, x.span_start, x.span_end FROM exemplars x
            JOIN documents d ON d.corpus_id = x.corpus_id AND d.doc_idx = x.doc_idx
            WHERE x.sae_key = ? AND (? OR x.feature IN (SELECT unnest(?)))
            QUALIFY row_number() OVER (PARTITION BY x.feature ORDER BY x.value DESC, x.corpus_id, x.rank) <= ?
            ORDER BY x.feature, x.value DESC
            """,
            [sae_key, features is None, features or [], per_feature],
        )

    def sample_encoded_docs(self, sae_key: int, corpus_ids: list[int], *, seed: int, limit: int) -> pl.DataFrame:
        """corpus_id, doc_idx of up to `limit` encoded documents in a random order fixed by `seed`."""
        return self.query(
            "SELECT corpus_id, doc_idx FROM encoded_docs WHERE sae_key = ? AND corpus_id IN (SELECT unnest(?)) "
            "ORDER BY hash(corpus_id, doc_idx, ?) LIMIT ?",
            [sae_key, corpus_ids, seed, limit],
        )

    def activations_of_docs(self, sae_key: int, keys: list[tuple[int, int]]) -> pl.DataFrame:
        """All activation rows of these (corpus_id, doc_idx) documents: corpus_id, doc_idx, feature,
        span_start, span_end."""
        frame = pl.DataFrame({"corpus_id": [k[0] for k in keys], "doc_idx": [k[1] for k in keys]},
                             schema={"corpus_id": pl.Int32, "doc_idx": pl.Int32})
        with self.registered("_interp_docs", frame):
            return self.query(
                "SELECT a.corpus_id, a.doc_idx, a.feature, a.span_start, a.span_end FROM activations a "
                "JOIN _interp_docs d ON a.corpus_id = d.corpus_id AND a.doc_idx = d.doc_idx WHERE a.sae_key = ?",
                [sae_key],
            )

    def doc_texts(self, corpus_id: int, doc_idx: list[int]) -> pl.DataFrame:
        """doc_idx, text of these documents of a corpus."""
        return self.query("SELECT doc_idx, text FROM documents WHERE corpus_id = ? AND doc_idx IN (SELECT unnest(?))",
                          [corpus_id, doc_idx])

    def activation_samples(self, sae_key: int, corpus_ids: list[int], features: list[int], *, n_bins: int,
                           seed: int, n_top: int, per_bin: int) -> pl.DataFrame:
        """Each feature's n_top strongest activations plus per_bin seeded random ones from each of n_bins
        quantile bins of its values: corpus_id, doc_idx, feature, value, span_start, span_end, rk (rank by
        value), n (documents it fires on), bin, r2 (random order within the bin)."""
        return self.query(
            """
            WITH a AS (
                SELECT corpus_id, doc_idx, feature, value, span_start, span_end,
                       row_number() OVER (PARTITION BY feature ORDER BY value DESC, corpus_id, doc_idx) AS rk,
                       count(*) OVER (PARTITION BY feature) AS n
                FROM activations
                WHERE sae_key = ? AND corpus_id IN (SELECT unnest(?)) AND feature IN (SELECT unnest(?))),
            b AS (
                SELECT *, CAST(floor((rk - 1) * ? / n) AS INTEGER) AS bin FROM a),
            c AS (
                SELECT *, row_number() OVER (PARTITION BY feature, bin ORDER BY hash(corpus_id, doc_idx, ?)) AS r2
                FROM b)
            SELECT * FROM c WHERE rk <= ? OR r2 <= ? ORDER BY feature, rk
            """,
            [sae_key, corpus_ids, list(features), n_bins, seed, n_top, per_bin],
        )


def text_hash(text: str) -> str:
    """The key a description vector is cached under (the same hash saeembed.interp.match computes)."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def metadata_context(metadata_json: str, corpus: str) -> str:
    """' (col=value 83% vs 48%; …)' for the metadata values a label's documents over-represent in `corpus`
    (at most two, strongest first), '' when there are none."""
    try:
        meta = json.loads(metadata_json or "[]")
    except ValueError:
        return ""
    here = [m for m in meta if isinstance(m, dict) and m.get("corpus") == corpus and m.get("column") != "corpus"][:2]
    if not here:
        return ""
    return " (" + "; ".join(f"{m['column']}={m['value']} {m['share']:.0%} vs {m['base_share']:.0%}" for m in here) + ")"


def _atlas_frame(book, features: list[int] | None, skip: set[int], descriptions: bool) -> pl.DataFrame:
    """Atlas labels of `features` (all without a list) other than those in `skip`, in labels()'s columns."""
    idx = np.arange(len(book))
    if features is not None:
        idx = idx[np.isin(book.features, np.asarray(list(features), dtype=np.int64))]
    idx = np.asarray([i for i in idx if int(book.features[i]) not in skip], dtype=np.int64)
    score = book.score[idx].astype(np.float64)
    cols = {
        "feature": book.features[idx].astype(np.int64),
        "label": [book.labels[i] for i in idx],
        "label_source": ["atlas"] * len(idx),
        "score": np.where(np.isfinite(score), score, np.nan),
        "weak": book.weak[idx].astype(bool),
    }
    if descriptions:
        cols["description"] = [book.descriptions[i] for i in idx]
    return pl.DataFrame(cols).with_columns(pl.col("score").fill_nan(None))
