"""The store's connection: open and lock down the file, check and migrate its schema, run queries.

Every value that comes from a user reaches DuckDB as a bound parameter; the only identifiers built
into SQL text are our own table names (docmeta_<int>) and the user's metadata column names, which
are quoted by `quote_ident`.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path

import duckdb
import polars as pl

from saeembed.errors import MigrationNeeded, SchemaVersionError, StoreError
from saeembed.store.schema import LAZY_TABLES, MIGRATIONS, REQUIRED_TABLES, SCHEMA_VERSION, TABLE_NAMES, TABLES
from saeembed.store.sql import first_line

DEFAULT_STORE = "saeembed.duckdb"

# What a read raises when a file is damaged (DuckDB reports some Parquet page errors as its plain Error).
DAMAGE_ERRORS = (duckdb.Error,)


def is_damage(e: Exception) -> bool:
    """A read error from damaged bytes, not from a query's mistake (parser, binder, catalog, conversion)."""
    if isinstance(e, (duckdb.IOException, duckdb.InternalException, duckdb.SerializationException)) or type(e) is duckdb.Error:
        return True
    text = str(e).lower()
    return isinstance(e, duckdb.InvalidInputException) and any(
        w in text for w in ("failed to read file", "decompression", "invalid data", "corrupt", "checksum", "thrift"))


class StoreBase:
    """Opening, locking down and checking a store file; the query helpers every store module uses."""

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
            raise StoreError(f"{self.path} is not a readable DuckDB store ({first_line(msg)})") from None
        except duckdb.Error as e:
            raise StoreError(f"cannot open store {self.path}: {first_line(str(e))}") from None
        try:
            self.con.execute("SET enable_progress_bar = false")  # saeembed draws its own progress
            self._lock_down(tuple(allow_paths))
            self._check_schema()
            self._load_shards()
        except duckdb.Error as e:  # e.g. a truncated file: DuckDB opens it, then cannot read its blocks
            self.con.close()
            raise StoreError(f"store {self.path} is damaged or truncated ({first_line(str(e))})") from None
        except BaseException:
            self.con.close()
            raise

    # --- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        self.con.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def transaction(self):
        """All writes inside commit together or not at all. Nested blocks join the outermost one, so a
        caller can make several store writes (a classifier and its scores) one unit."""
        if getattr(self, "_tx_depth", 0):
            self._tx_depth += 1
            try:
                yield
            finally:
                self._tx_depth -= 1
            return
        self.con.begin()
        self._tx_depth = 1
        try:
            yield
        except BaseException:
            self._tx_depth = 0
            self.con.rollback()
            self._run_commit_hooks(False)
            raise
        self._tx_depth = 0
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
        missing = sorted(set(TABLE_NAMES) - set(LAZY_TABLES) - self._tables())
        if missing:
            raise StoreError(
                f"store {self.path} lacks the table(s) {', '.join(missing)} that schema version {SCHEMA_VERSION} has; "
                "it was damaged or edited outside saeembed. Restore it from a copy, or export what you need and "
                "re-create it")

    def _migrate(self, version: int) -> None:
        if self.read_only:
            raise MigrationNeeded(
                f"store {self.path} has schema version {version} and needs a migration to {SCHEMA_VERSION}; "
                "open it once for writing to migrate it: Store(path), or any saeembed command"
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
        except DAMAGE_ERRORS as e:
            raise self._damaged(e) from None

    def _one(self, sql: str, params: list | None = None):
        rows = self._all(sql, params)
        return rows[0][0] if rows else None

    def query(self, sql: str, params: list | None = None) -> pl.DataFrame:
        """Run a read query with bound parameters and return a polars DataFrame."""
        try:
            return self.con.sql(sql, params=params or None).pl()
        except DAMAGE_ERRORS as e:
            raise self._damaged(e) from None

    def _damaged(self, e: Exception) -> Exception:
        """A read that failed on the disk: name the file (one of its shards, or the store itself).
        A programming error (a bad query) is passed through unchanged."""
        if not is_damage(e):
            return e
        shard = self._damaged_shard() if hasattr(self, "_damaged_shard") else None
        if shard is not None:
            return StoreError(f"activation shard {shard} is damaged ({first_line(str(e))}); "
                              "re-encode its corpus with `saeembed encode CORPUS --replace`")
        return StoreError(f"cannot read store {self.path}: {first_line(str(e))}; the file may be damaged or truncated")

    def _meta(self, key: str) -> str | None:
        return self._one("SELECT value FROM meta WHERE key = ?", [key])

    def _set_meta(self, key: str, value: str) -> None:
        self.con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", [key, value])

    @property
    def schema_version(self) -> int:
        return int(self._meta("schema_version"))

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


def _package_version() -> str:
    from saeembed import __version__

    return f"saeembed {__version__}"
