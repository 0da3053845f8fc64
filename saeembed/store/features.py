"""Reading the sparse embeddings: per-document rows, export, feature summaries, exemplar snippets."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl

from saeembed.errors import InputError, StoreError
from saeembed.store.records import CorpusInfo, SAEInfo
from saeembed.store.sql import quote_ident
from saeembed.textwindow import snippet


class FeaturesMixin:
    """Store methods that read activations and exemplars."""

    # --- reading embeddings ---------------------------------------------------------------------

    def _activation_query(self, info: CorpusInfo, sae: SAEInfo, *, with_metadata: bool = False) -> tuple[str, list]:
        """The rows of an export; with_metadata adds each document's metadata columns and one column
        `cluster.NAME` per saved clustering of the corpus (null where it did not cover the document)."""
        cols, joins, params = ["d.doc_id", "a.feature", "a.value", "a.active_tokens"], [], []
        if with_metadata:
            taken = {"doc_id", "feature", "value", "active_tokens"}
            for c in info.metadata_columns:
                alias = c
                while alias in taken:  # a metadata column named like an export column keeps both
                    alias += "_meta"
                taken.add(alias)
                cols.append(f"m.{quote_ident(c)} AS {quote_ident(alias)}")
            if info.metadata_columns:
                joins.append(f"LEFT JOIN {info.meta_table} m ON m.doc_idx = a.doc_idx")
            saved = self._all("SELECT clustering_id, name FROM clusterings WHERE corpus_id = ? ORDER BY clustering_id",
                              [info.corpus_id])
            for i, (cid, name) in enumerate(saved):
                cols.append(f"c{i}.cluster AS {quote_ident('cluster.' + name)}")
                joins.append(f"LEFT JOIN cluster_assignments c{i} ON c{i}.clustering_id = ? AND c{i}.doc_idx = a.doc_idx")
                params.append(cid)
        return (
            f"SELECT {', '.join(cols)} FROM activations a "
            "JOIN documents d ON d.corpus_id = a.corpus_id AND d.doc_idx = a.doc_idx "
            f"{' '.join(joins)} WHERE a.corpus_id = ? AND a.sae_key = ? ORDER BY a.doc_idx, a.feature",
            params + [info.corpus_id, sae.sae_key],
        )

    def activations(self, corpus: str, *, sae: str | None = None) -> pl.DataFrame:
        """The sparse SAE embeddings of a corpus: rows of (doc_id, feature, value, active_tokens)."""
        info = self.corpus(corpus)
        return self.query(*self._activation_query(info, self.encoded_sae(info, sae)))

    def export(self, corpus: str, out: str | os.PathLike, *, sae: str | None = None, with_metadata: bool = False,
               batch_rows: int = 1_000_000) -> int:
        """Write the sparse embeddings to .parquet, .csv or .jsonl, streaming batches of `batch_rows` (the
        corpus is never held in memory); returns the row count. with_metadata: see _activation_query."""
        out, fmt = export_target(out)
        info = self.corpus(corpus)
        sql, params = self._activation_query(info, self.encoded_sae(info, sae), with_metadata=with_metadata)
        reader = self.con.sql(sql, params=params).to_arrow_reader(batch_rows)
        nested = [f.name for f in reader.schema if pa_nested(f.type)]
        if fmt == "csv" and nested:
            raise InputError(f"metadata column {nested[0]!r} holds lists or records, which CSV cannot; export to "
                             ".parquet or .jsonl")
        tmp = out.with_name(out.name + ".partial")
        n = 0
        try:
            n = write_batches(reader, tmp, fmt)
            os.replace(tmp, out)  # a half-written export never sits under the final name
        finally:
            if tmp.exists():
                tmp.unlink()
        return n

    def _summary_scope(self, corpus: str | None, sae: str | None) -> tuple[SAEInfo, str, list, int]:
        """(SAE, WHERE over activations a, its parameters, documents) of a corpus, or of every corpus encoded
        with the store's only SAE."""
        if corpus is not None:
            info = self.corpus(corpus)
            s = self.encoded_sae(info, sae)
            return s, "a.corpus_id = ? AND a.sae_key = ?", [info.corpus_id, s.sae_key], info.n_docs
        s = self._only_sae(sae)
        n_docs = self._one("SELECT coalesce(sum(n_docs), 0) FROM encodings WHERE sae_key = ?", [s.sae_key])
        return s, "a.sae_key = ?", [s.sae_key], n_docs

    def feature_doc_frequencies(self, corpus: str | None = None, *, sae: str | None = None
                                ) -> tuple[SAEInfo, pl.DataFrame, int]:
        """(SAE, frame of feature, docs, freq for every feature that fires, documents in scope), over a
        corpus or (without one) every corpus encoded with the SAE."""
        s, where, params, n_docs = self._summary_scope(corpus, sae)
        frame = self.query(
            f"SELECT a.feature, count(*) AS docs, count(*) / ?::DOUBLE AS freq FROM activations a WHERE {where} "
            "GROUP BY a.feature ORDER BY a.feature",
            [max(n_docs, 1)] + params,
        )
        return s, frame, n_docs

    def feature_summary(
        self, corpus: str | None = None, *, sae: str | None = None, top: int = 20, order_by: str = "docs",
        exclude: list[int] | None = None,
    ) -> pl.DataFrame:
        """Features ranked by how many documents they fire on (or by max/mean activation), with labels and
        the top exemplar's snippet. Without a corpus, over every corpus encoded with the SAE. Features in
        `exclude` (e.g. generic ones) are left out."""
        order = {"docs": "docs DESC", "max": "max_value DESC", "mean": "mean_value DESC"}.get(order_by)
        if order is None:
            raise InputError(f"unknown order {order_by!r}; use docs, max or mean")
        s, where, params, n_docs = self._summary_scope(corpus, sae)
        stats = self.query(
            f"""
            SELECT a.feature, count(*) AS docs, count(*) / ?::DOUBLE AS freq,
                   avg(a.value) AS mean_value, max(a.value) AS max_value
            FROM activations a WHERE {where} AND a.feature NOT IN (SELECT unnest(?::INTEGER[]))
            GROUP BY a.feature ORDER BY {order}, a.feature LIMIT ?
            """,
            [max(n_docs, 1)] + params + [list(exclude or []), top],
        )
        labels = self.labels(s.sae_key, stats["feature"].to_list())
        snippets = self.exemplar_snippets(s.sae_key, stats["feature"].to_list(), corpus=corpus, per_feature=1)
        first = snippets.group_by("feature").agg(pl.col("snippet").first().alias("top_exemplar"))
        stats = stats.with_row_index("rank", offset=1)
        return (
            stats.join(labels, on="feature", how="left")
            .join(first, on="feature", how="left")
            .sort("rank")
        )

    def _only_sae(self, sae: str | None) -> SAEInfo:
        rows = self._all("SELECT sae_key, sae_hash FROM saes ORDER BY sae_key")
        if sae:
            rows = [r for r in rows if r[1].startswith(sae)]
        if not rows:
            raise StoreError("the store holds no SAE" + (f" matching {sae!r}" if sae else "; run `saeembed encode`"))
        if len(rows) > 1:
            raise StoreError(f"the store holds several SAEs ({', '.join(r[1] for r in rows)}); pick one with --sae")
        return self.sae_info(rows[0][0])

    def exemplar_snippets(
        self, sae_key: int, features: list[int], *, corpus: str | None = None, per_feature: int = 5, width: int = 60
    ) -> pl.DataFrame:
        """Top documents of each feature with a snippet around the strongest token, marked «like this», and
        that token's text (peak_token)."""
        corpus_filter, params = "", [sae_key, features]
        if corpus is not None:
            corpus_filter = " AND x.corpus_id = ?"
            params.append(self.corpus(corpus).corpus_id)
        rows = self.query(
            f"""
            SELECT x.feature, c.name AS corpus, d.doc_id, x.value, x.span_start, x.span_end, d.text
            FROM exemplars x
            JOIN documents d ON d.corpus_id = x.corpus_id AND d.doc_idx = x.doc_idx
            JOIN corpora c ON c.corpus_id = x.corpus_id
            WHERE x.sae_key = ? AND x.feature IN (SELECT unnest(?)){corpus_filter}
            QUALIFY row_number() OVER (PARTITION BY x.feature ORDER BY x.value DESC, x.corpus_id, x.rank) <= ?
            ORDER BY x.feature, x.value DESC
            """,
            params + [per_feature],
        )
        snippets = [
            snippet(t, s, e, width) for t, s, e in zip(rows["text"], rows["span_start"], rows["span_end"])
        ]
        peaks = [t[s:e] if s is not None and e is not None else None
                 for t, s, e in zip(rows["text"], rows["span_start"], rows["span_end"])]
        return rows.drop("text", "span_start", "span_end").with_columns(
            pl.Series("snippet", snippets, pl.Utf8), pl.Series("peak_token", peaks, pl.Utf8))


def pa_nested(dtype) -> bool:
    import pyarrow.types as pat

    return pat.is_nested(dtype)


def export_target(out) -> tuple[Path, str]:
    """(path, format) of an export file: .parquet, .csv or .jsonl in a folder that exists."""
    out = Path(out)
    fmt = out.suffix.lower().lstrip(".")
    if fmt not in ("parquet", "csv", "jsonl", "ndjson"):
        raise InputError(f"cannot export to {out.name}: use a .parquet, .csv or .jsonl file name")
    if not out.parent.is_dir():
        raise InputError(f"cannot export to {out}: folder {out.parent} does not exist")
    return out, fmt


def write_batches(reader, path: Path, fmt: str) -> int:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    n = 0
    if fmt == "parquet":
        with pq.ParquetWriter(path, reader.schema) as w:
            for batch in reader:
                w.write_batch(batch)
                n += batch.num_rows
    elif fmt == "csv":
        with pacsv.CSVWriter(path, reader.schema) as w:
            for batch in reader:
                w.write_batch(batch)
                n += batch.num_rows
    else:
        with open(path, "wb") as f:
            for batch in reader:
                pl.from_arrow(batch).write_ndjson(f)
                n += batch.num_rows
    return n
