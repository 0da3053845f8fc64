"""Corpora and their documents: add (create, append, replace), read, drop, and stream the unencoded."""

from __future__ import annotations

import json
from typing import Iterator

import polars as pl

from saeembed.columns import INTERNAL_COLUMNS, reserved_error
from saeembed.errors import InputError, StoreError, UnknownCorpusError
from saeembed.store.names import check_name
from saeembed.store.records import CorpusInfo
from saeembed.store.sql import quote_ident

__all__ = ["INTERNAL_COLUMNS", "CorporaMixin"]  # INTERNAL_COLUMNS: names a metadata column may not take
_WIDER_SQL = {pl.Int64: "BIGINT", pl.Float64: "DOUBLE"}  # the types a stored numeric column may widen to


# How add_corpus treats a corpus name already in the store: refuse it, add new documents, or start over.
NEW, APPEND, REPLACE = "create", "append", "replace"
INGEST_MODES = (NEW, APPEND, REPLACE)

class CorporaMixin:
    """Store methods for corpora and documents."""

    def corpus(self, name: str) -> CorpusInfo:
        row = self._all(
            "SELECT corpus_id, name, n_docs, source, text_column, id_column, metadata_columns "
            "FROM corpora WHERE name = ?",
            [name],
        )
        if not row:
            known = [r[0] for r in self._all("SELECT name FROM corpora ORDER BY name")]
            hint = f"known corpora: {', '.join(known)}" if known else "the store has no corpora yet; run `saeembed ingest`"
            raise UnknownCorpusError(f"unknown corpus {name!r} ({hint})")
        cid, name, n, source, text_col, id_col, meta_cols = row[0]
        return CorpusInfo(cid, name, n, source, text_col, id_col, json.loads(meta_cols) if meta_cols else {})

    def has_corpus(self, name: str) -> bool:
        return bool(self._one("SELECT count(*) FROM corpora WHERE name = ?", [name]))

    def corpora(self) -> pl.DataFrame:
        """One row per corpus with its size and what it has been encoded with."""
        return self.query(
            """
            SELECT c.name AS corpus, c.n_docs, c.source,
                   list_sort(json_keys(c.metadata_columns)) AS metadata_columns,
                   count(e.sae_key) AS encodings,
                   string_agg(s.sae_hash || ' (' || e.status || ', ' || e.n_docs || ' docs'
                              || CASE WHEN json_extract_string(e.params, '$.skip_tokens') = 'function'
                                      THEN ', skips function tokens' ELSE '' END || ')', '; ') AS saes,
                   c.created_at
            FROM corpora c
            LEFT JOIN encodings e USING (corpus_id)
            LEFT JOIN saes s USING (sae_key)
            GROUP BY ALL ORDER BY c.name
            """
        )

    def add_corpus(self, name: str, docs, *, mode: str = NEW) -> CorpusInfo:
        """Store documents (a saeembed.documents.Documents) under a corpus name.

        mode: "create" (fail if the corpus exists), "append" (add documents whose ids are new; an id
        already stored with a different text is an error), or "replace" (drop the corpus and its
        encodings first). The whole call is one transaction: on any error nothing is stored.
        """
        if self.read_only:
            raise StoreError("store is open read-only")
        name = check_name(name, "corpus")
        if mode not in INGEST_MODES:
            raise InputError(f"unknown ingest mode {mode!r}")
        frame: pl.DataFrame = docs.frame
        meta_cols = [c for c in frame.columns if c not in ("doc_id", "text")]
        # An all-null column (no type of its own) is stored as text, so later appends have a type to fit.
        frame = frame.with_columns(frame[c].cast(pl.String) for c in meta_cols if frame[c].dtype == pl.Null)
        for c in meta_cols:  # names filters or the store give another meaning (saeembed.columns)
            problem = reserved_error(c)
            if problem is not None:
                raise problem
        exists = self.has_corpus(name)
        if exists and mode == NEW:
            raise StoreError(
                f"corpus {name!r} already exists in {self.path}; use --append to add documents or --replace to start over"
            )
        with self.transaction():
            if exists and mode == REPLACE:
                self._drop_corpus(self.corpus(name))
                exists = False
            if exists:
                info = self.corpus(name)
                frame = self._fit_metadata(info, self._new_documents(info, frame), meta_cols)
                start = info.n_docs
            else:
                cid = (self._one("SELECT max(corpus_id) FROM corpora") or 0) + 1
                dtypes = {c: str(frame.schema[c]) for c in meta_cols}
                self.con.execute(
                    "INSERT INTO corpora (corpus_id, name, source, text_column, id_column, metadata_columns, n_docs) "
                    "VALUES (?, ?, ?, ?, ?, ?, 0)",
                    [cid, name, docs.source, docs.text_column, docs.id_column, json.dumps(dtypes)],
                )
                info = self.corpus(name)
                start = 0
            frame = frame.with_columns(
                pl.int_range(start, start + frame.height, dtype=pl.Int32).alias("doc_idx"),
                pl.col("text").str.len_chars().cast(pl.Int32).alias("n_chars"),
            )
            self.con.register("_new_docs", frame)
            try:
                self.con.execute(
                    "INSERT INTO documents SELECT ?, doc_idx, doc_id, text, n_chars FROM _new_docs", [info.corpus_id]
                )
                self._write_metadata(info, exists, meta_cols, frame)
            finally:
                self.con.unregister("_new_docs")
            self.con.execute(
                "UPDATE corpora SET n_docs = n_docs + ? WHERE corpus_id = ?", [frame.height, info.corpus_id]
            )
            if exists and frame.height:
                # New documents make the encodings of this corpus incomplete until re-run.
                self.con.execute(
                    "UPDATE encodings SET status = 'partial' WHERE corpus_id = ?", [info.corpus_id]
                )
        return self.corpus(name)

    def _new_documents(self, info: CorpusInfo, frame: pl.DataFrame) -> pl.DataFrame:
        """For --append: keep rows whose ids are new; refuse ids already stored with another text."""
        self.con.register("_incoming", frame.select("doc_id", "text"))
        try:
            stored = self._all(
                "SELECT i.doc_id, d.text <> i.text FROM _incoming i JOIN documents d ON d.doc_id = i.doc_id "
                "WHERE d.corpus_id = ?",
                [info.corpus_id],
            )
        finally:
            self.con.unregister("_incoming")
        known = {doc_id for doc_id, _ in stored}
        clash = sorted(doc_id for doc_id, differs in stored if differs)[:5]
        if clash:
            ids = ", ".join(repr(doc_id) for doc_id in clash)
            raise InputError(
                f"ids already in corpus {info.name!r} with a different text: {ids}; use --replace or new ids"
            )
        return frame.filter(~pl.col("doc_id").is_in(list(known))) if known else frame

    def _fit_metadata(self, info: CorpusInfo, frame: pl.DataFrame, meta_cols: list[str]) -> pl.DataFrame:
        """For --append: the new metadata in the stored columns' types, exactly. A stored numeric column
        is widened (Int64 -> Float64, in this transaction) when new values need it and every old and new
        value survives; anything else that would change a value is refused, so nothing is ever rounded.
        Text into a numeric column is refused rather than widening the column to VARCHAR: that would
        silently change what every filter on it means (`n > 10` would compare text) and how it sorts,
        and a data engineer expects a schema mismatch to be reported, not the schema to drift."""
        table = info.meta_table
        stored = self.query(f"SELECT * FROM {table} LIMIT 0").schema
        widened = {}
        for c in meta_cols:
            if c not in stored or frame[c].dtype == stored[c]:
                continue
            col, want = frame[c], stored[c]
            fitted = _exact(col, want)
            if fitted is None and want.is_numeric() and col.dtype.is_numeric():
                target = pl.Int64 if want.is_integer() and col.dtype.is_integer() else pl.Float64
                old = self.query(f"SELECT {quote_ident(c)} FROM {table}")[c]
                if target != want and _exact(old, target) is not None:
                    fitted = _exact(col, target)
                if fitted is not None:
                    self.con.execute(
                        f"ALTER TABLE {table} ALTER COLUMN {quote_ident(c)} TYPE {_WIDER_SQL[target]}"
                    )
                    widened[c] = str(target)
            if fitted is None:
                raise InputError(
                    f"metadata column {c!r} of corpus {info.name!r} holds {want} values, but the new file has "
                    f"{col.dtype} values that cannot be stored there unchanged (e.g. {_misfit(col, want)!r}); "
                    f"convert the column in the file, rename it (--rename {c}=NEW), or use --replace to start over"
                )
            frame = frame.with_columns(fitted.alias(c))
        if widened:
            self.con.execute(
                "UPDATE corpora SET metadata_columns = ? WHERE corpus_id = ?",
                [json.dumps({**info.metadata_columns, **widened}), info.corpus_id],
            )
            info.metadata_columns.update(widened)
        return frame

    def _write_metadata(self, info: CorpusInfo, exists: bool, meta_cols: list[str], frame: pl.DataFrame) -> None:
        table = info.meta_table
        cols = ", ".join(["doc_idx"] + [quote_ident(c) for c in meta_cols])
        if not exists:
            self.con.execute(f"CREATE TABLE {table} AS SELECT {cols} FROM _new_docs")
            return
        stored = set(info.metadata_columns)
        new = [c for c in meta_cols if c not in stored]
        for c in new:  # columns seen for the first time in an appended file
            dtype = self._one(f"SELECT typeof({quote_ident(c)}) FROM _new_docs LIMIT 1") or "VARCHAR"
            self.con.execute(f"ALTER TABLE {table} ADD COLUMN {quote_ident(c)} {dtype}")
        if new:
            merged = dict(info.metadata_columns)
            merged.update({c: str(frame.schema[c]) for c in new})
            self.con.execute(
                "UPDATE corpora SET metadata_columns = ? WHERE corpus_id = ?", [json.dumps(merged), info.corpus_id]
            )
        self.con.execute(f"INSERT INTO {table} BY NAME SELECT {cols} FROM _new_docs")

    def drop_corpus(self, name: str) -> None:
        info = self.corpus(name)
        with self.transaction():
            self._drop_corpus(info)

    def _drop_corpus(self, info: CorpusInfo) -> None:
        self.con.execute(
            "DELETE FROM cluster_assignments WHERE clustering_id IN "
            "(SELECT clustering_id FROM clusterings WHERE corpus_id = ?)", [info.corpus_id]
        )
        self._drop_shards(info.corpus_id)  # shard files go once this commits
        for table in (self.activations_table, "encoded_docs", "exemplars", "encodings", "documents", "dense_embeddings",
                      "clusterings", "doc_scores"):
            self.con.execute(f"DELETE FROM {table} WHERE corpus_id = ?", [info.corpus_id])
        self.con.execute(f"DROP TABLE IF EXISTS {info.meta_table}")
        self.con.execute("DELETE FROM corpora WHERE corpus_id = ?", [info.corpus_id])

    def documents(
        self, corpus: str | CorpusInfo, *, text: bool = True, metadata: bool = True, doc_idx: list[int] | None = None
    ) -> pl.DataFrame:
        """Documents of a corpus in doc_idx order: doc_idx, doc_id, [text], [metadata columns].

        doc_idx: only these documents (default: all)."""
        info = corpus if isinstance(corpus, CorpusInfo) else self.corpus(corpus)
        cols = "d.doc_idx, d.doc_id" + (", d.text" if text else "")
        join = ""
        if metadata and info.metadata_columns:
            cols += ", m.* EXCLUDE (doc_idx)"
            join = f"LEFT JOIN {info.meta_table} m USING (doc_idx)"
        return self.query(
            f"SELECT {cols} FROM documents d {join} WHERE d.corpus_id = ? "
            "AND (? OR d.doc_idx IN (SELECT unnest(?))) ORDER BY d.doc_idx",
            [info.corpus_id, doc_idx is None, doc_idx or []],
        )

    def iter_unencoded(
        self, info: CorpusInfo, sae_key: int, *, batch_size: int = 256
    ) -> Iterator[tuple[list[int], list[str]]]:
        """Stream (doc_idx list, text list) of the documents this encoding has not stored yet.

        Reads through a separate cursor so the caller can write between batches.
        """
        cur = self.con.cursor()
        try:
            reader = cur.sql(
                "SELECT doc_idx, text FROM documents d WHERE corpus_id = ? AND NOT EXISTS "
                "(SELECT 1 FROM encoded_docs e WHERE e.corpus_id = d.corpus_id AND e.sae_key = ? "
                " AND e.doc_idx = d.doc_idx) ORDER BY doc_idx",
                params=[info.corpus_id, sae_key],
            ).to_arrow_reader(batch_size)
            pending_idx: list[int] = []
            pending_txt: list[str] = []
            for batch in reader:
                pending_idx.extend(batch.column(0).to_pylist())
                pending_txt.extend(batch.column(1).to_pylist())
                while len(pending_idx) >= batch_size:
                    yield pending_idx[:batch_size], pending_txt[:batch_size]
                    pending_idx, pending_txt = pending_idx[batch_size:], pending_txt[batch_size:]
            if pending_idx:
                yield pending_idx, pending_txt
        finally:
            cur.close()


def _kind(dtype) -> str:
    return "num" if dtype.is_numeric() else {pl.Boolean: "bool", pl.String: "str"}.get(dtype, "other")


def _exact(col: pl.Series, dtype) -> pl.Series | None:
    """col cast to dtype when every value survives the round trip unchanged, else None. Into a text
    column anything goes (as its text); text into another type must parse exactly ("4" -> 4, not "+4";
    "1.50" -> 1.5 into a float column, as saeembed.readers types a CSV column);
    numbers go only into numbers, booleans only into booleans, dates and the like only into their kind."""
    if col.null_count() == col.len():
        return col.cast(dtype)
    have, want = _kind(col.dtype), _kind(dtype)
    if want == "str":
        return col.cast(pl.String)
    if have != want and have != "str":
        return None
    try:
        cast = col.cast(dtype, strict=False)
        back = cast.cast(col.dtype, strict=False)
    except pl.exceptions.PolarsError:
        return None
    if cast.null_count() != col.null_count():
        return None
    if have == "str" and dtype.is_float():  # as a CSV column is typed: "1.50" is 1.5, but "nan" stays a word
        return cast if col.str.contains("[0-9]").all() else None
    return cast if back.eq_missing(col).all() else None


def _misfit(col: pl.Series, dtype):
    """The first value of col that does not fit dtype exactly (for the message)."""
    for value in col.drop_nulls().to_list():
        if _exact(pl.Series([value], dtype=col.dtype), dtype) is None:
            return value
    return None
