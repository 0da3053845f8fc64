"""The DuckDB store: one file per project holding corpora, SAEs, sparse activations and exemplars.

Every value that comes from a user reaches DuckDB as a bound parameter; the only identifiers built
into SQL text are our own table names (docmeta_<int>) and the user's metadata column names, which
are quoted by `quote_ident`.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import duckdb
import numpy as np
import polars as pl

from saeembed.errors import (
    InputError,
    SchemaVersionError,
    StoreError,
    UnknownCorpusError,
)
from saeembed.store.schema import MIGRATIONS, REQUIRED_TABLES, SCHEMA_VERSION, TABLES
from saeembed.store.sharding import ShardingMixin

DEFAULT_STORE = "saeembed.duckdb"

# Encode parameters that change the stored numbers: a resumed encode must use the same ones.
POOLING_PARAMS = ("pooling", "exclude_special", "chat_template", "window", "prompt_column")
# Column names the store uses beside the user's metadata; a metadata column may not take them.
INTERNAL_COLUMNS = ("doc_idx", "n_chars", "corpus_id")


def quote_ident(name: str) -> str:
    """Quote an identifier for DuckDB (the user's column names)."""
    return '"' + str(name).replace('"', '""') + '"'


@dataclass(frozen=True)
class CorpusInfo:
    corpus_id: int
    name: str
    n_docs: int
    source: str | None = None
    text_column: str | None = None
    id_column: str | None = None
    metadata_columns: dict[str, str] = field(default_factory=dict)  # name -> polars dtype

    @property
    def meta_table(self) -> str:
        return f"docmeta_{self.corpus_id}"


@dataclass(frozen=True)
class SAEInfo:
    sae_key: int
    sae_hash: str
    model: str | None
    hook: str | None
    architecture: str
    k: int | None
    d_in: int
    d_sae: int
    source: str | None


class Store(ShardingMixin):
    """A saeembed project file. Open with `Store(path)` or `open_store(path)`; close when done."""

    def __init__(self, path: str | os.PathLike = DEFAULT_STORE, *, read_only: bool = False, create: bool = True,
                 allow_paths: tuple = ()):
        """allow_paths: extra folders DuckDB may read/write through this connection (besides the store
        and its shard folder); file access is otherwise off, see store/sharding.py."""
        self.path = Path(path)
        self.read_only = read_only
        exists = self.path.exists()
        if not exists and (read_only or not create):
            raise StoreError(f"no store at {self.path}; create one with `saeembed ingest FILE --corpus NAME`")
        if exists and self.path.is_dir():
            raise StoreError(f"{self.path} is a folder, not a store file")
        if exists and self.path.stat().st_size == 0:  # DuckDB would silently start a new database in it
            raise StoreError(f"{self.path} is an empty file (0 bytes), not a saeembed store; delete it to start a new store")
        try:
            self.con = duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.IOException as e:
            msg = str(e)
            if "lock" in msg.lower():
                raise StoreError(
                    f"store {self.path} is busy: another process is writing to it; try again when it finishes"
                ) from None
            raise StoreError(f"{self.path} is not a readable DuckDB store ({_first_line(msg)})") from None
        except duckdb.Error as e:
            raise StoreError(f"cannot open store {self.path}: {_first_line(str(e))}") from None
        try:
            self.con.execute("SET enable_progress_bar = false")  # saeembed draws its own progress
            self._lock_down(tuple(allow_paths))
            self._check_schema()
            self._load_shards()
        except duckdb.Error as e:  # e.g. a truncated file: DuckDB opens it, then cannot read its blocks
            self.con.close()
            raise StoreError(f"store {self.path} is damaged or truncated ({_first_line(str(e))})") from None
        except BaseException:
            self.con.close()
            raise

    # --- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def transaction(self):
        self.con.begin()
        try:
            yield
        except BaseException:
            self.con.rollback()
            self._run_commit_hooks(False)
            raise
        self.con.commit()
        self._run_commit_hooks(True)

    @contextmanager
    def registered(self, name: str, table):
        """Make an arrow/polars table queryable as `name` for the duration of the block."""
        self.con.register(name, table)
        try:
            yield
        finally:
            self.con.unregister(name)

    def _tables(self) -> set[str]:
        return {r[0] for r in self._all("SELECT table_name FROM information_schema.tables")}

    def _check_schema(self) -> None:
        tables = self._tables()
        if not tables:
            if self.read_only:
                raise StoreError(f"{self.path} is an empty DuckDB file, not a saeembed store")
            with self.transaction():
                for ddl in TABLES:
                    self.con.execute(ddl)
                self._set_meta("schema_version", str(SCHEMA_VERSION))
                self._set_meta("created_by", _package_version())
            return
        if "meta" not in tables or not REQUIRED_TABLES & tables:
            raise StoreError(f"{self.path} is a DuckDB file but not a saeembed store (no saeembed tables)")
        version = self._meta("schema_version")
        if version is None or not version.isdigit():
            raise StoreError(f"{self.path} has no readable schema version; it was not written by saeembed")
        version = int(version)
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"store {self.path} has schema version {version}, newer than this saeembed understands "
                f"({SCHEMA_VERSION}); upgrade saeembed to open it"
            )
        if version < SCHEMA_VERSION:
            self._migrate(version)

    def _migrate(self, version: int) -> None:
        if self.read_only:
            raise SchemaVersionError(
                f"store {self.path} has schema version {version} and needs a migration to {SCHEMA_VERSION}; "
                "open it once without read-only mode (any write command) to migrate"
            )
        missing = [v for v in range(version, SCHEMA_VERSION) if v not in MIGRATIONS]
        if missing:
            raise SchemaVersionError(
                f"store {self.path} has schema version {version}; this saeembed cannot migrate it to "
                f"{SCHEMA_VERSION} (no migration from version {missing[0]}); re-create the store"
            )
        with self.transaction():  # all steps or none: a failed migration leaves the old store intact
            for v in range(version, SCHEMA_VERSION):
                for stmt in MIGRATIONS[v]:
                    self.con.execute(stmt)
            for ddl in TABLES:
                self.con.execute(ddl)
            self._set_meta("schema_version", str(SCHEMA_VERSION))

    # --- small query helpers ----------------------------------------------------------------

    def _all(self, sql: str, params: list | None = None) -> list[tuple]:
        try:
            return self.con.execute(sql, params or []).fetchall()
        except duckdb.IOException as e:
            raise self._damaged(e) from None

    def _one(self, sql: str, params: list | None = None):
        rows = self._all(sql, params)
        return rows[0][0] if rows else None

    def query(self, sql: str, params: list | None = None) -> pl.DataFrame:
        """Run a read query with bound parameters and return a polars DataFrame."""
        try:
            return self.con.sql(sql, params=params or None).pl()
        except duckdb.IOException as e:
            raise self._damaged(e) from None

    def _damaged(self, e: Exception) -> StoreError:
        """A read that failed on the disk: name the file (the store or one of its shards)."""
        return StoreError(f"cannot read store {self.path}: {_first_line(str(e))}; the file may be damaged or truncated")

    def _meta(self, key: str) -> str | None:
        return self._one("SELECT value FROM meta WHERE key = ?", [key])

    def _set_meta(self, key: str, value: str) -> None:
        self.con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", [key, value])

    @property
    def schema_version(self) -> int:
        return int(self._meta("schema_version"))

    # --- corpora ------------------------------------------------------------------------------

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
                   string_agg(s.sae_hash || ' (' || e.status || ', ' || e.n_docs || ' docs)', '; ') AS saes,
                   c.created_at
            FROM corpora c
            LEFT JOIN encodings e USING (corpus_id)
            LEFT JOIN saes s USING (sae_key)
            GROUP BY ALL ORDER BY c.name
            """
        )

    def add_corpus(self, name: str, docs, *, mode: str = "create") -> CorpusInfo:
        """Store documents (a saeembed.documents.Documents) under a corpus name.

        mode: "create" (fail if the corpus exists), "append" (add documents whose ids are new; an id
        already stored with a different text is an error), or "replace" (drop the corpus and its
        encodings first). The whole call is one transaction: on any error nothing is stored.
        """
        if self.read_only:
            raise StoreError("store is open read-only")
        name = _check_name(name)
        if mode not in ("create", "append", "replace"):
            raise InputError(f"unknown ingest mode {mode!r}")
        frame: pl.DataFrame = docs.frame
        meta_cols = [c for c in frame.columns if c not in ("doc_id", "text")]
        taken = [c for c in meta_cols if c in INTERNAL_COLUMNS]
        if taken:
            raise InputError(
                f"metadata column {taken[0]!r} is a name saeembed uses internally; rename it in the file"
            )
        exists = self.has_corpus(name)
        if exists and mode == "create":
            raise StoreError(
                f"corpus {name!r} already exists in {self.path}; use --append to add documents or --replace to start over"
            )
        with self.transaction():
            if exists and mode == "replace":
                self._drop_corpus(self.corpus(name))
                exists = False
            if exists:
                info = self.corpus(name)
                frame = self._new_documents(info, frame)
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
                self._write_metadata(info, exists, meta_cols)
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

    def _write_metadata(self, info: CorpusInfo, exists: bool, meta_cols: list[str]) -> None:
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
            merged.update({c: "?" for c in new})
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
        self._drop_shards(info.corpus_id)  # issue 8: shard files go once this commits
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

    def count_unencoded(self, info: CorpusInfo, sae_key: int) -> int:
        done = self._one(
            "SELECT count(*) FROM encoded_docs WHERE corpus_id = ? AND sae_key = ?", [info.corpus_id, sae_key]
        )
        return info.n_docs - done

    # --- SAEs -----------------------------------------------------------------------------------

    def register_sae(self, sae) -> SAEInfo:
        """Record an SAE (saeembed.sae.SAE) by content hash; registering it again is a no-op."""
        key = self._one("SELECT sae_key FROM saes WHERE sae_hash = ?", [sae.identity])
        if key is None:
            cfg = sae.cfg
            config = {k: v for k, v in cfg.to_dict().items() if k != "extra"}
            config["model_card"] = cfg.extra.get("model_card")
            with self.transaction():
                key = (self._one("SELECT max(sae_key) FROM saes") or 0) + 1
                self.con.execute(
                    "INSERT INTO saes (sae_key, sae_hash, model, hook, architecture, k, d_in, d_sae, source, config) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [key, sae.identity, cfg.model, cfg.hook, cfg.architecture, cfg.k, cfg.d_in, cfg.d_sae,
                     cfg.source, json.dumps(config, default=str)],
                )
        return self.sae_info(key)

    def sae_info(self, sae_key: int) -> SAEInfo:
        row = self._all(
            "SELECT sae_key, sae_hash, model, hook, architecture, k, d_in, d_sae, source FROM saes WHERE sae_key = ?",
            [sae_key],
        )
        if not row:
            raise StoreError(f"no SAE with key {sae_key} in the store")
        return SAEInfo(*row[0])

    def saes(self) -> pl.DataFrame:
        return self.query(
            "SELECT sae_hash AS sae, model, hook, architecture, k, d_in, d_sae, source FROM saes ORDER BY sae_key"
        )

    def encoded_sae(self, corpus: str | CorpusInfo, sae: str | None = None) -> SAEInfo:
        """The SAE a corpus was encoded with. `sae` (hash or prefix) picks one when there are several."""
        info = corpus if isinstance(corpus, CorpusInfo) else self.corpus(corpus)
        rows = self._all(
            "SELECT s.sae_key, s.sae_hash FROM encodings e JOIN saes s USING (sae_key) "
            "WHERE e.corpus_id = ? ORDER BY s.sae_key",
            [info.corpus_id],
        )
        if sae:
            rows = [r for r in rows if r[1].startswith(sae)]
        if not rows:
            extra = f" with SAE {sae!r}" if sae else ""
            raise StoreError(f"corpus {info.name!r} is not encoded{extra}; run `saeembed encode {info.name}` first")
        if len(rows) > 1:
            raise StoreError(
                f"corpus {info.name!r} is encoded with several SAEs ({', '.join(r[1] for r in rows)}); pick one with --sae"
            )
        self.check_encoding(info.corpus_id, rows[0][0])  # issue 8: missing/damaged/foreign shard
        return self.sae_info(rows[0][0])

    # --- encoding -------------------------------------------------------------------------------

    def begin_encoding(self, info: CorpusInfo, sae: SAEInfo, model: str, hook: str, params: dict) -> int:
        """Start or resume an encoding; returns how many documents are already stored for it.

        A resumed encoding must pool the same way as the stored rows, or the rows would mix rules.
        """
        self.check_encoding(info.corpus_id, sae.sae_key)  # a bad shard: --replace, not a silent gap
        row = self._all(
            "SELECT model, hook, params FROM encodings WHERE corpus_id = ? AND sae_key = ?",
            [info.corpus_id, sae.sae_key],
        )
        if row:
            old_model, old_hook, old_params = row[0]
            old_params = json.loads(old_params or "{}")
            diffs = [
                f"{k}: stored {old_params.get(k)!r}, now {params.get(k)!r}"
                for k in POOLING_PARAMS
                if old_params.get(k) != params.get(k)
            ]
            if old_hook != hook:
                diffs.insert(0, f"hook: stored {old_hook!r}, now {hook!r}")
            if diffs:
                raise StoreError(
                    f"corpus {info.name!r} is already encoded with this SAE in another way ({'; '.join(diffs)}); "
                    "re-run with the same settings to resume, or with --replace to start over"
                )
            if old_model != model:
                self.con.execute(
                    "UPDATE encodings SET model = ? WHERE corpus_id = ? AND sae_key = ?",
                    [model, info.corpus_id, sae.sae_key],
                )
        else:
            self.con.execute(
                "INSERT INTO encodings (corpus_id, sae_key, model, hook, params, status) VALUES (?, ?, ?, ?, ?, 'running')",
                [info.corpus_id, sae.sae_key, model, hook, json.dumps(params, default=str)],
            )
        return self._one(
            "SELECT count(*) FROM encoded_docs WHERE corpus_id = ? AND sae_key = ?", [info.corpus_id, sae.sae_key]
        )

    def drop_encoding(self, info: CorpusInfo, sae: SAEInfo) -> None:
        with self.transaction():
            self._drop_shards(info.corpus_id, sae.sae_key)
            for table in (self.activations_table, "encoded_docs", "exemplars", "encodings"):
                self.con.execute(
                    f"DELETE FROM {table} WHERE corpus_id = ? AND sae_key = ?", [info.corpus_id, sae.sae_key]
                )

    def write_encoded(self, info: CorpusInfo, sae: SAEInfo, activations, docs, *, shard: bool = False,
                      shard_file: tuple | None = None) -> None:
        """Store one batch: sparse rows and the documents they cover, in one transaction.

        activations: arrow/polars table (doc_idx, feature, value, active_tokens, span_start, span_end)
        docs: arrow/polars table (doc_idx, n_tokens, n_windows)
        shard: write the rows as a Parquet shard instead of into the store's table.
        shard_file: (path, n_rows) of a shard already written (e.g. by a Ray worker); activations unused.
        """
        params = [info.corpus_id, sae.sae_key]
        if shard and shard_file is None:
            shard_file = self._write_shard_file(info, sae, activations)
        if shard_file is None:
            self.con.register("_acts", activations)
        self.con.register("_docs", docs)
        try:
            with self.transaction():
                if shard_file is not None:
                    self._register_shard(info, sae, Path(shard_file[0]), shard_file[1], docs)
                else:
                    self.con.execute(
                        f"INSERT INTO {self.activations_table} SELECT ?, ?, doc_idx, feature, value, active_tokens, "
                        "span_start, span_end FROM _acts",
                        params,
                    )
                self.con.execute("INSERT INTO encoded_docs SELECT ?, ?, doc_idx, n_tokens, n_windows FROM _docs", params)
                self.con.execute(
                    "UPDATE encodings SET n_docs = n_docs + (SELECT count(*) FROM _docs), "
                    "n_tokens = n_tokens + (SELECT coalesce(sum(n_tokens), 0) FROM _docs), "
                    "n_split_docs = n_split_docs + (SELECT count(*) FROM _docs WHERE n_windows > 1) "
                    "WHERE corpus_id = ? AND sae_key = ?",
                    params,
                )
        except BaseException:
            if shard and shard_file is not None:  # our own file, never registered: remove it
                Path(shard_file[0]).unlink(missing_ok=True)
            raise
        finally:
            if shard_file is None:
                self.con.unregister("_acts")
            self.con.unregister("_docs")

    def finish_encoding(self, info: CorpusInfo, sae: SAEInfo, *, exemplars_per_feature: int = 20) -> None:
        """Rebuild the per-feature exemplars and mark the encoding complete (one transaction)."""
        params = [info.corpus_id, sae.sae_key]
        with self.transaction():
            self.con.execute("DELETE FROM exemplars WHERE corpus_id = ? AND sae_key = ?", params)
            self.con.execute(
                """
                INSERT INTO exemplars
                SELECT corpus_id, sae_key, feature,
                       row_number() OVER (PARTITION BY feature ORDER BY value DESC, doc_idx) AS rank,
                       doc_idx, value, span_start, span_end
                FROM activations WHERE corpus_id = ? AND sae_key = ?
                QUALIFY rank <= ?
                """,
                params + [exemplars_per_feature],
            )
            done = self._one("SELECT count(*) FROM encoded_docs WHERE corpus_id = ? AND sae_key = ?", params)
            status = "complete" if done >= info.n_docs else "partial"
            self.con.execute(
                "UPDATE encodings SET status = ?, finished_at = current_timestamp WHERE corpus_id = ? AND sae_key = ?",
                [status] + params,
            )

    def encoding(self, info: CorpusInfo, sae: SAEInfo) -> dict:
        row = self.query(
            "SELECT model, hook, params, status, n_docs, n_tokens, n_split_docs, started_at, finished_at "
            "FROM encodings WHERE corpus_id = ? AND sae_key = ?",
            [info.corpus_id, sae.sae_key],
        )
        if row.is_empty():
            raise StoreError(f"corpus {info.name!r} is not encoded with SAE {sae.sae_hash}")
        out = row.row(0, named=True)
        out["params"] = json.loads(out["params"] or "{}")
        return out

    # --- SAE probes (generic-feature detection) ---------------------------------------------------

    def has_probe(self, sae: SAEInfo, probe: str) -> bool:
        return bool(self._one("SELECT count(*) FROM sae_probes WHERE sae_key = ? AND probe = ?", [sae.sae_key, probe]))

    def set_probe(self, sae: SAEInfo, probe: str, stats: pl.DataFrame, n_docs: int, details: dict | None = None) -> None:
        """Store a probe's per-feature values (feature, value), replacing an older run of it."""
        with self.transaction():
            self.con.execute("DELETE FROM feature_stats WHERE sae_key = ? AND probe = ?", [sae.sae_key, probe])
            self.con.execute("DELETE FROM sae_probes WHERE sae_key = ? AND probe = ?", [sae.sae_key, probe])
            with self.registered("_probe", stats.select("feature", "value").to_arrow()):
                self.con.execute("INSERT INTO feature_stats SELECT ?, ?, feature, value FROM _probe", [sae.sae_key, probe])
            self.con.execute(
                "INSERT INTO sae_probes (sae_key, probe, n_docs, details) VALUES (?, ?, ?, ?)",
                [sae.sae_key, probe, n_docs, json.dumps(details or {})],
            )

    def probe(self, sae: SAEInfo, probe: str) -> pl.DataFrame | None:
        """(feature, value) of a stored probe; None when the probe was never run for this SAE."""
        if not self.has_probe(sae, probe):
            return None
        return self.query(
            "SELECT feature, value FROM feature_stats WHERE sae_key = ? AND probe = ? ORDER BY feature",
            [sae.sae_key, probe],
        )

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

    # --- reading embeddings ---------------------------------------------------------------------

    def _activation_query(self, info: CorpusInfo, sae: SAEInfo) -> tuple[str, list]:
        return (
            "SELECT d.doc_id, a.feature, a.value, a.active_tokens FROM activations a "
            "JOIN documents d ON d.corpus_id = a.corpus_id AND d.doc_idx = a.doc_idx "
            "WHERE a.corpus_id = ? AND a.sae_key = ? ORDER BY a.doc_idx, a.feature",
            [info.corpus_id, sae.sae_key],
        )

    def activations(self, corpus: str, *, sae: str | None = None) -> pl.DataFrame:
        """The sparse SAE embeddings of a corpus: rows of (doc_id, feature, value, active_tokens)."""
        info = self.corpus(corpus)
        return self.query(*self._activation_query(info, self.encoded_sae(info, sae)))

    def export(self, corpus: str, out: str | os.PathLike, *, sae: str | None = None, batch_rows: int = 1_000_000) -> int:
        """Write the sparse embeddings to .parquet, .csv or .jsonl, streaming; returns the row count."""
        out = Path(out)
        fmt = out.suffix.lower().lstrip(".")
        if fmt not in ("parquet", "csv", "jsonl", "ndjson"):
            raise InputError(f"cannot export to {out.name}: use a .parquet, .csv or .jsonl file name")
        info = self.corpus(corpus)
        sql, params = self._activation_query(info, self.encoded_sae(info, sae))
        reader = self.con.sql(sql, params=params).to_arrow_reader(batch_rows)
        tmp = out.with_name(out.name + ".partial")
        n = 0
        try:
            n = _write_batches(reader, tmp, fmt)
            os.replace(tmp, out)  # a half-written export never sits under the final name
        finally:
            if tmp.exists():
                tmp.unlink()
        return n

    def feature_summary(
        self, corpus: str | None = None, *, sae: str | None = None, top: int = 20, order_by: str = "docs"
    ) -> pl.DataFrame:
        """Features ranked by how many documents they fire on (or by max/mean activation), with labels and
        the top exemplar's snippet. Without a corpus, over every corpus encoded with the SAE."""
        order = {"docs": "docs DESC", "max": "max_value DESC", "mean": "mean_value DESC"}.get(order_by)
        if order is None:
            raise InputError(f"unknown order {order_by!r}; use docs, max or mean")
        if corpus is not None:
            info = self.corpus(corpus)
            s = self.encoded_sae(info, sae)
            where, params, n_docs = "a.corpus_id = ? AND a.sae_key = ?", [info.corpus_id, s.sae_key], info.n_docs
        else:
            s = self._only_sae(sae)
            where, params = "a.sae_key = ?", [s.sae_key]
            n_docs = self._one("SELECT coalesce(sum(n_docs), 0) FROM encodings WHERE sae_key = ?", [s.sae_key])
        stats = self.query(
            f"""
            SELECT a.feature, count(*) AS docs, count(*) / ?::DOUBLE AS freq,
                   avg(a.value) AS mean_value, max(a.value) AS max_value
            FROM activations a WHERE {where}
            GROUP BY a.feature ORDER BY {order}, a.feature LIMIT ?
            """,
            [max(n_docs, 1)] + params + [top],
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

    def labels(self, sae_key: int, features: list[int] | None = None) -> pl.DataFrame:
        """The newest label of each feature: feature, label, label_source, score."""
        return self.query(
            """
            SELECT feature, label, source AS label_source, score FROM feature_labels
            WHERE sae_key = ? AND (? OR feature IN (SELECT unnest(?)))
            QUALIFY row_number() OVER (PARTITION BY feature ORDER BY created_at DESC) = 1
            """,
            [sae_key, features is None, features or []],
        )

    def exemplar_snippets(
        self, sae_key: int, features: list[int], *, corpus: str | None = None, per_feature: int = 5, width: int = 60
    ) -> pl.DataFrame:
        """Top documents of each feature with a snippet around the strongest token, marked «like this»."""
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
        return rows.drop("text", "span_start", "span_end").with_columns(pl.Series("snippet", snippets, pl.Utf8))

    def info(self) -> dict:
        """What the store holds, as a JSON-safe dict."""
        return {
            "path": str(self.path),
            "schema_version": self.schema_version,
            "created_by": self._meta("created_by"),
            "size_bytes": self.path.stat().st_size if self.path.exists() else 0,
            "corpora": self._one("SELECT count(*) FROM corpora"),
            "documents": self._one("SELECT count(*) FROM documents"),
            "saes": self._one("SELECT count(*) FROM saes"),
            "encodings": self._one("SELECT count(*) FROM encodings"),
            "activation_rows": self._one("SELECT count(*) FROM activations"),
            "activation_shards": len(self.shards()),
            "labelled_features": self._one("SELECT count(DISTINCT (sae_key, feature)) FROM feature_labels"),
        }

    def record_run(self, kind: str, params: dict, provenance: dict | None = None) -> int:
        """Log an analysis run with its parameters and provenance; returns its id."""
        with self.transaction():
            run_id = (self._one("SELECT max(run_id) FROM runs") or 0) + 1
            self.con.execute(
                "INSERT INTO runs (run_id, kind, params, provenance) VALUES (?, ?, ?, ?)",
                [run_id, kind, json.dumps(params, default=str), json.dumps(provenance or {}, default=str)],
            )
        return run_id


def open_store(path: str | os.PathLike = DEFAULT_STORE, *, read_only: bool = False) -> Store:
    return Store(path, read_only=read_only)


def snippet(text: str, start: int | None, end: int | None, width: int = 60) -> str:
    """A one-line window of `text` around [start, end) with the span marked «…»."""
    if start is None or end is None or start < 0 or end > len(text) or start >= end:
        body = text[: 2 * width]
        return " ".join(body.split()) + ("…" if len(text) > 2 * width else "")
    left = max(0, start - width)
    right = min(len(text), end + width)
    out = ("…" if left else "") + text[left:start] + "«" + text[start:end] + "»" + text[end:right]
    out += "…" if right < len(text) else ""
    return " ".join(out.split())


def _check_name(name: str) -> str:
    name = str(name).strip()
    if not name or len(name) > 200 or any(ord(ch) < 32 for ch in name):
        raise InputError("a corpus name must be 1-200 printable characters")
    return name


def _first_line(msg: str) -> str:
    return msg.strip().splitlines()[0] if msg.strip() else msg


def _package_version() -> str:
    from saeembed import __version__

    return f"saeembed {__version__}"


def _write_batches(reader, path: Path, fmt: str) -> int:
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
