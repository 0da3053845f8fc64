"""The Store's side of sharding and of its file-access lock-down (mixed into Store).

- `_lock_down()`: after opening, DuckDB may touch no file but the store, its spill folder and its
  shard folder (`enable_external_access=false` with `allowed_directories`). It cannot be turned back on
  for the life of the connection, so even a SQL string that went wrong could not read /etc/passwd,
  COPY … TO a file, ATTACH another database or install an extension.
- `_load_shards()`: checks every registered shard (present, readable footer, right SAE, right row
  count) and builds the `activations` temp view over the base table plus the good shards. A bad
  shard only disables its own encoding: `check_encoding` raises a StoreError naming the file, every
  other corpus stays usable.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from saeembed.errors import StoreError
from saeembed.store import shards as sh
from saeembed.store.base import DAMAGE_ERRORS

SHARD_TABLE_DDL_MARK = "activation_shards"


class ShardingMixin:
    """Methods Store gets for shards; relies on Store's con, path, read_only, transaction, _all, _one."""

    # --- lock-down ---------------------------------------------------------------------------

    def _lock_down(self, allow: tuple = ()) -> None:
        if not self.con.execute("SELECT current_setting('enable_external_access')").fetchall()[0][0]:
            return  # another connection of this process already locked this database down
        dirs = [str(sh.shard_root(self.path)) + "/"] + [str(Path(p).absolute()) + "/" for p in allow]
        self.con.execute("SET allowed_directories = ?", [dirs])
        self.con.execute("SET enable_external_access = false")

    # --- names --------------------------------------------------------------------------------

    @property
    def activations_table(self) -> str:
        """The stored activations table by full name (`activations` alone may be the view with shards)."""
        if getattr(self, "_base_activations", None) is None:
            from saeembed.store.sql import quote_ident

            db = self.con.execute("SELECT current_database()").fetchall()[0][0]
            self._base_activations = f"{quote_ident(db)}.main.activations"
        return self._base_activations

    @property
    def shard_root(self) -> Path:
        return sh.shard_root(self.path)

    # --- loading and checking ---------------------------------------------------------------------

    def _has_shard_table(self) -> bool:
        return bool(self._one(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'activation_shards' "
            "AND table_schema = 'main' AND table_catalog = current_database()"
        ))

    def _ensure_shard_table(self) -> None:
        """Stores created before shards existed (same schema version) get the registry on first write open."""
        if self.read_only or self._has_shard_table():
            return
        from saeembed.store.schema import TABLES

        ddl = next(t for t in TABLES if SHARD_TABLE_DDL_MARK in t.split("(")[0])
        self.con.execute(ddl)

    def _load_shards(self) -> None:
        self._ensure_shard_table()
        self._shard_files: dict[tuple[int, int], list[str]] = {}
        self._shard_errors: dict[tuple[int, int], str] = {}
        if not self._has_shard_table():
            return
        rows = self._all(
            "SELECT r.corpus_id, r.sae_key, r.path, r.n_rows, s.sae_hash, c.name FROM activation_shards r "
            "JOIN saes s USING (sae_key) JOIN corpora c USING (corpus_id) ORDER BY r.shard_id"
        )
        for cid, sae_key, rel, n_rows, sae_hash, corpus in rows:
            key = (cid, sae_key)
            try:
                path = self._shard_path(rel)
                sh.check_shard(path, sae_hash=sae_hash, n_rows=n_rows, corpus=corpus)
            except StoreError as e:
                self._shard_errors.setdefault(key, str(e))
                continue
            self._shard_files.setdefault(key, []).append(str(path))
        for key in self._shard_errors:  # an encoding with a bad shard is left out whole, not half-read
            self._shard_files.pop(key, None)
        self._refresh_activation_view()

    def _shard_path(self, rel: str) -> Path:
        """A registered shard's file, which must lie inside the shard folder: a store file is data, and a
        crafted row must not make saeembed read or delete anything else (`../x`, `/etc/...`, a symlink out)."""
        root = self.shard_root.resolve()
        p = Path(rel)
        path = (p if p.is_absolute() else self.shard_root / p).resolve()
        if not path.is_relative_to(root):
            raise StoreError(
                f"store {self.path} registers a shard outside its shard folder ({rel!r}, not under {root}); "
                "refusing to read or delete it. The store may have been tampered with; re-create it")
        return path

    def _refresh_activation_view(self) -> None:
        if getattr(self, "_pool", None) is not None:  # re-pooled values (store/tokens.py) stay on
            self._pool_view()
            return
        if not self._shard_files:
            self.con.execute("DROP VIEW IF EXISTS temp.main.activations")
            return
        self.con.execute("CREATE OR REPLACE TEMP VIEW activations AS " + self._activation_source())

    def _activation_source(self) -> str:
        """The stored activation rows as one SELECT: the base table plus every good shard."""
        cols = ", ".join(sh.COLUMNS)
        parts = [f"SELECT corpus_id, sae_key, {cols} FROM {self.activations_table}"]
        for (cid, sae_key), paths in sorted(self._shard_files.items()):
            files = "[" + ", ".join(sh.sql_literal(p) for p in paths) + "]"
            parts.append(
                f"SELECT {int(cid)}::INTEGER AS corpus_id, {int(sae_key)}::INTEGER AS sae_key, {cols} "
                f"FROM read_parquet({files})"
            )
        return "\nUNION ALL ".join(parts)

    def check_encoding(self, corpus_id: int, sae_key: int) -> None:
        """StoreError naming the file when a shard of this encoding is missing, damaged or foreign."""
        err = getattr(self, "_shard_errors", {}).get((corpus_id, sae_key))
        if err:
            raise StoreError(err)

    # --- writing ---------------------------------------------------------------------------------

    def _write_shard_file(self, info, sae, acts) -> tuple[Path, int]:
        folder = sh.encoding_dir(self.shard_root, info.corpus_id, sae.sae_key)
        return sh.write_shard(folder, acts, sae_hash=sae.sae_hash, corpus=info.name)

    def _register_shard(self, info, sae, path: Path, n_rows: int, docs) -> None:
        """Inside the caller's transaction: record a complete shard file of this encoding."""
        sh.check_shard(path, sae_hash=sae.sae_hash, n_rows=n_rows, corpus=info.name)
        doc_idx = docs["doc_idx"] if hasattr(docs, "columns") else docs.column("doc_idx")
        doc_idx = pl.Series(doc_idx) if not isinstance(doc_idx, pl.Series) else doc_idx
        shard_id = (self._one("SELECT max(shard_id) FROM activation_shards") or 0) + 1
        try:
            rel = str(path.relative_to(self.shard_root))
        except ValueError:
            rel = str(path)
        self.con.execute(
            "INSERT INTO activation_shards (shard_id, corpus_id, sae_key, path, n_rows, n_docs, doc_min, doc_max) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [shard_id, info.corpus_id, sae.sae_key, rel, n_rows, len(doc_idx),
             int(doc_idx.min()) if len(doc_idx) else None, int(doc_idx.max()) if len(doc_idx) else None],
        )
        self._after_commit(lambda: self._shard_added(info.corpus_id, sae.sae_key, path))

    def _shard_added(self, cid: int, sae_key: int, path: Path) -> None:
        if (cid, sae_key) not in self._shard_errors:
            self._shard_files.setdefault((cid, sae_key), []).append(str(path))
            self._refresh_activation_view()

    def _drop_shards(self, corpus_id: int, sae_key: int | None = None) -> None:
        """Inside the caller's transaction: unregister shards; their files go once it commits."""
        self._drop_token_shards(corpus_id, sae_key)
        if not self._has_shard_table():
            return
        rows = self._all(
            "SELECT corpus_id, sae_key, path FROM activation_shards WHERE corpus_id = ? AND (? OR sae_key = ?)",
            [corpus_id, sae_key is None, sae_key],
        )
        if not rows:
            return
        self.con.execute(
            "DELETE FROM activation_shards WHERE corpus_id = ? AND (? OR sae_key = ?)",
            [corpus_id, sae_key is None, sae_key],
        )
        files = [f for f in map(self._confined, (r[2] for r in rows)) if f is not None]
        keys = {(r[0], r[1]) for r in rows}

        def forget():
            for key in keys:
                self._shard_files.pop(key, None)
                self._shard_errors.pop(key, None)
            self._refresh_activation_view()
            for f in files:
                f.unlink(missing_ok=True)

        self._after_commit(forget)

    def _confined(self, rel: str) -> Path | None:
        """The shard's file when it lies inside the shard folder; None (never touched) otherwise."""
        try:
            return self._shard_path(rel)
        except StoreError:
            return None

    def _damaged_shard(self) -> str | None:
        """After a read failed: the first registered shard whose pages cannot be read, if any."""
        import pyarrow.parquet as pq

        for paths in getattr(self, "_shard_files", {}).values():
            for f in paths:
                try:
                    pq.read_table(f)
                except Exception:  # any decode error: this is the damaged file
                    return f
        return None

    def _after_commit(self, fn) -> None:
        """Run fn once the current transaction commits (dropped on rollback)."""
        if not hasattr(self, "_commit_hooks"):
            self._commit_hooks = []
        self._commit_hooks.append(fn)

    def _run_commit_hooks(self, committed: bool) -> None:
        hooks, self._commit_hooks = getattr(self, "_commit_hooks", []), []
        if committed:
            for fn in hooks:
                fn()

    # --- reading -----------------------------------------------------------------------------------

    def shards(self, corpus: str | None = None) -> pl.DataFrame:
        """Registered shards: corpus, sae, path, n_rows, n_docs, doc_min, doc_max, ok, error."""
        if not self._has_shard_table():
            return pl.DataFrame()
        frame = self.query(
            "SELECT c.name AS corpus, r.corpus_id, r.sae_key, s.sae_hash AS sae, r.path, r.n_rows, r.n_docs, "
            "r.doc_min, r.doc_max, r.created_at FROM activation_shards r JOIN corpora c USING (corpus_id) "
            "JOIN saes s USING (sae_key) WHERE (? OR c.name = ?) ORDER BY r.shard_id",
            [corpus is None, corpus],
        )
        errors = [self._shard_errors.get((c, k)) for c, k in zip(frame["corpus_id"], frame["sae_key"])]
        return frame.with_columns(
            pl.Series("ok", [e is None for e in errors]), pl.Series("error", errors, dtype=pl.Utf8)
        ).drop("corpus_id", "sae_key")

    # --- compaction ----------------------------------------------------------------------------

    def compact(self, corpus: str | None = None, *, into: str = "shard") -> pl.DataFrame:
        """Merge the shards of each encoding (of `corpus`, or all): into one shard sorted by (doc_idx,
        feature) (into="shard"), or into the store's own table (into="table"). Unregistered files
        left in the shard folder by crashed runs are removed. Returns one row per encoding touched."""
        if self.read_only:
            raise StoreError("store is open read-only")
        if into not in ("shard", "table"):
            raise StoreError(f"unknown compaction target {into!r}; use shard or table")
        if not self._has_shard_table():
            return pl.DataFrame()
        cid_filter = self.corpus(corpus).corpus_id if corpus is not None else None
        keys = self._all(
            "SELECT r.corpus_id, r.sae_key, c.name, s.sae_hash, count(*), sum(r.n_rows), sum(r.n_docs), "
            "min(r.doc_min), max(r.doc_max) FROM activation_shards r JOIN corpora c USING (corpus_id) "
            "JOIN saes s USING (sae_key) WHERE (? OR r.corpus_id = ?) GROUP BY ALL ORDER BY 1, 2",
            [cid_filter is None, cid_filter],
        )
        report = []
        for cid, sae_key, name, sae_hash, n_shards, n_rows, n_docs, dmin, dmax in keys:
            self.check_encoding(cid, sae_key)
            files = list(self._shard_files.get((cid, sae_key), []))
            if into == "shard" and n_shards <= 1:
                report.append({"corpus": name, "sae": sae_hash, "shards_before": n_shards, "shards_after": n_shards,
                               "rows": n_rows})
                continue
            self._compact_one(cid, sae_key, name, sae_hash, files, into, int(n_rows), int(n_docs), dmin, dmax)
            report.append({"corpus": name, "sae": sae_hash, "shards_before": n_shards,
                           "shards_after": 1 if into == "shard" else 0, "rows": n_rows})
        self.sweep_orphan_shards()
        return pl.DataFrame(report)

    def _compact_one(self, cid, sae_key, name, sae_hash, files, into, n_rows, n_docs, dmin, dmax) -> None:
        cols = ", ".join(sh.COLUMNS)
        old = [Path(f) for f in files]
        if into == "table":
            with self.transaction():
                try:
                    self.con.execute(
                        f"INSERT INTO {self.activations_table} SELECT ?, ?, {cols} FROM read_parquet(?)",
                        [cid, sae_key, files],
                    )
                except DAMAGE_ERRORS as e:
                    raise self._damaged(e) from None
                self.con.execute("DELETE FROM activation_shards WHERE corpus_id = ? AND sae_key = ?", [cid, sae_key])
                self._after_commit(lambda: self._replace_shards(cid, sae_key, old, None))
            return
        try:
            reader = self.con.sql(
                f"SELECT {cols} FROM read_parquet(?) ORDER BY doc_idx, feature", params=[files]
            ).to_arrow_reader(1 << 18)
            path, written = sh.write_shard_batches(sh.encoding_dir(self.shard_root, cid, sae_key), reader,
                                                   sae_hash=sae_hash, corpus=name)
        except DAMAGE_ERRORS as e:
            raise self._damaged(e) from None
        try:
            if written != n_rows:
                raise StoreError(f"compaction of corpus {name!r} read {written} rows, expected {n_rows}; nothing changed")
            with self.transaction():
                self.con.execute("DELETE FROM activation_shards WHERE corpus_id = ? AND sae_key = ?", [cid, sae_key])
                shard_id = (self._one("SELECT max(shard_id) FROM activation_shards") or 0) + 1
                self.con.execute(
                    "INSERT INTO activation_shards (shard_id, corpus_id, sae_key, path, n_rows, n_docs, doc_min, doc_max) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [shard_id, cid, sae_key, str(path.relative_to(self.shard_root)), n_rows, n_docs, dmin, dmax],
                )
                self._after_commit(lambda: self._replace_shards(cid, sae_key, old, path))
        except BaseException:
            path.unlink(missing_ok=True)
            raise

    def _replace_shards(self, cid: int, sae_key: int, old: list[Path], new: Path | None) -> None:
        if new is None:
            self._shard_files.pop((cid, sae_key), None)
        else:
            self._shard_files[(cid, sae_key)] = [str(new)]
        self._refresh_activation_view()
        for f in old:
            f.unlink(missing_ok=True)

    def sweep_orphan_shards(self) -> int:
        """Delete files in the shard folder that no registered shard names (left by a crash between a
        file's rename and its registration, or by a failed Ray run). Returns how many went."""
        root = self.shard_root
        if self.read_only or not root.is_dir():
            return 0
        known = {str(self._confined(r[0])) for r in self._all("SELECT path FROM activation_shards")}
        known |= {str(self._confined(r[0])) for r in self._all("SELECT path FROM token_shards")}
        gone = 0
        for folder in root.iterdir():
            if not folder.is_dir() or not folder.name.startswith("c"):
                continue
            for f in folder.iterdir():
                if f.is_file() and (f.suffix in (".parquet", ".tmp")) and str(f.resolve()) not in known:
                    f.unlink(missing_ok=True)
                    gone += 1
        return gone
