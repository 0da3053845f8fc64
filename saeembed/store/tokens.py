"""Token-level rows of an encoding (encode --keep-tokens): writing their Parquet shards, reading them
back (export, one document's spans, trigger counts) and re-pooling the document rows from them.

Token shards live beside the activation shards (`<store>.shards/c<corpus>-s<sae>/t-*.parquet`) under the
same rules: written under a temporary name, registered in `token_shards` in the same transaction as
their documents' `encoded_docs` rows (so a resumed encode has token rows for exactly the stored
documents), confined to the shard folder, and checked (footer, SAE, row count) before they are read.

Re-pooling swaps this connection's `activations` view for one whose values are pooled another way,
so every analysis that reads `activations` sees them without knowing: mean and sum come from the token
rows, count and binary from the document rows (count = active_tokens, the token rows' count).

An encoding that skipped function tokens in its max-pool (params skip_tokens = "function") keeps every
token's rows with a `pooled` flag; re-pooling takes the pooled tokens only, as the document rows did.
Without that param every token was pooled (older token shards have no flag).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import polars as pl

from saeembed.errors import InputError, StoreError
from saeembed.store import shards as sh
from saeembed.store.base import DAMAGE_ERRORS
from saeembed.store.records import CorpusInfo, SAEInfo

POOLS = ("max", "mean", "sum", "count", "binary")
NEEDS_TOKENS = ("mean", "sum")
_VALUE = {"binary": "1.0", "count": "a.active_tokens", "sum": "p.total",
          "mean": "p.total / greatest(coalesce(p.n_pooled, e.n_tokens), 1)"}


class TokensMixin:
    """Store methods for token rows; relies on Store's con, transaction, _all, _one and the shard helpers."""

    # --- writing -----------------------------------------------------------------------------------

    def begin_token_rows(self, info: CorpusInfo, sae: SAEInfo, keep: bool, already: int) -> None:
        """Record whether this encoding keeps token rows; a resumed encode must keep the same choice, or
        some documents would have token rows and others not."""
        stored = bool(self._one("SELECT keep_tokens FROM encodings WHERE corpus_id = ? AND sae_key = ?",
                                [info.corpus_id, sae.sae_key]))
        if already and stored != keep:
            had = "with" if stored else "without"
            raise StoreError(
                f"corpus {info.name!r} is already partly encoded with this SAE {had} token rows (--keep-tokens); "
                f"re-run {'with' if stored else 'without'} --keep-tokens to resume, or with --replace to start over")
        if stored != keep:
            self.con.execute("UPDATE encodings SET keep_tokens = ? WHERE corpus_id = ? AND sae_key = ?",
                             [keep, info.corpus_id, sae.sae_key])

    def write_token_shard(self, info: CorpusInfo, sae: SAEInfo, rows) -> tuple[Path, int]:
        """Write token rows (doc_idx, token_index, start, end, feature, value, pooled) as a new, not yet
        registered token shard; register it with `write_encoded_tokens`. Rows without `pooled` were all pooled."""
        if "pooled" not in rows.columns:
            rows = rows.with_columns(pl.lit(True).alias("pooled"))
        folder = sh.encoding_dir(self.shard_root, info.corpus_id, sae.sae_key)
        return sh.write_shard(folder, rows, sae_hash=sae.sae_hash, corpus=info.name, kind="tokens")

    def write_encoded_tokens(self, info: CorpusInfo, sae: SAEInfo, activations, docs, token_files: list[tuple],
                             *, shard: bool = False, shard_file: tuple | None = None) -> None:
        """The documents' rows (see write_encoded; shard_file: an activation shard already written, e.g. by
        a Ray worker) and their token shards, in one transaction. token_files: (path, n_rows, n_docs,
        doc_min, doc_max) from write_token_shard. On failure the token files are removed (never registered)."""
        try:
            with self.transaction():
                for path, n_rows, n_docs, dmin, dmax in token_files:
                    sh.check_shard(Path(path), sae_hash=sae.sae_hash, n_rows=n_rows, corpus=info.name, kind="tokens")
                    shard_id = (self._one("SELECT max(shard_id) FROM token_shards") or 0) + 1
                    self.con.execute(
                        "INSERT INTO token_shards (shard_id, corpus_id, sae_key, path, n_rows, n_docs, doc_min, doc_max) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        [shard_id, info.corpus_id, sae.sae_key, str(Path(path).relative_to(self.shard_root)),
                         n_rows, n_docs, dmin, dmax])
                self.write_encoded(info, sae, activations, docs, shard=shard, shard_file=shard_file)
        except BaseException:
            for path, *_ in token_files:
                Path(path).unlink(missing_ok=True)
            raise
        finally:
            self._token_checked = {}

    def _drop_token_shards(self, corpus_id: int, sae_key: int | None = None) -> None:
        """Inside the caller's transaction: unregister token shards; their files go once it commits."""
        rows = self._all("SELECT path FROM token_shards WHERE corpus_id = ? AND (? OR sae_key = ?)",
                         [corpus_id, sae_key is None, sae_key]) if self._has_token_table() else []
        if not rows:
            return
        self.con.execute("DELETE FROM token_shards WHERE corpus_id = ? AND (? OR sae_key = ?)",
                         [corpus_id, sae_key is None, sae_key])
        files = [f for f in (self._confined(r[0]) for r in rows) if f is not None]

        def forget():
            self._token_checked = {}
            for f in files:
                f.unlink(missing_ok=True)

        self._after_commit(forget)

    def _has_token_table(self) -> bool:
        return bool(self._one(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'token_shards' "
            "AND table_schema = 'main' AND table_catalog = current_database()"))

    # --- reading -----------------------------------------------------------------------------------

    def has_token_rows(self, info: CorpusInfo, sae: SAEInfo) -> bool:
        """Whether this encoding kept token rows (encode --keep-tokens)."""
        return bool(self._one("SELECT keep_tokens FROM encodings WHERE corpus_id = ? AND sae_key = ?",
                              [info.corpus_id, sae.sae_key]))

    def require_token_rows(self, info: CorpusInfo, sae: SAEInfo, what: str) -> None:
        if not self.has_token_rows(info, sae):
            raise InputError(f"{what} needs token-level rows, and corpus {info.name!r} has none; re-encode it with "
                             f"`saeembed encode {info.name} --keep-tokens --replace`")

    def token_files(self, info: CorpusInfo, sae: SAEInfo) -> list[str]:
        """The checked token shard files of an encoding; StoreError naming a missing, damaged or foreign one."""
        cache = getattr(self, "_token_checked", None)
        if cache is None:
            cache = self._token_checked = {}
        key = (info.corpus_id, sae.sae_key)
        if key not in cache:
            files = []
            for rel, n_rows in self._all("SELECT path, n_rows FROM token_shards WHERE corpus_id = ? AND sae_key = ? "
                                         "ORDER BY shard_id", [info.corpus_id, sae.sae_key]):
                path = self._shard_path(rel)
                sh.check_shard(path, sae_hash=sae.sae_hash, n_rows=n_rows, corpus=info.name, kind="tokens")
                files.append(str(path))
            cache[key] = files
        return cache[key]

    def skips_tokens(self, info: CorpusInfo, sae: SAEInfo) -> bool:
        """Whether this encoding's max-pool skipped function tokens (its token rows then say which were pooled)."""
        params = self._one("SELECT params FROM encodings WHERE corpus_id = ? AND sae_key = ?",
                           [info.corpus_id, sae.sae_key])
        return json.loads(params or "{}").get("skip_tokens", "none") != "none"

    def _pooled(self, info: CorpusInfo, sae: SAEInfo) -> str:
        """SQL for a token row's pooled flag."""
        return "t.pooled" if self.skips_tokens(info, sae) else "TRUE"

    def _token_source(self, info: CorpusInfo, sae: SAEInfo) -> str | None:
        files = self.token_files(info, sae)
        if not files:
            return None
        return "read_parquet([" + ", ".join(sh.sql_literal(f) for f in files) + "])"

    def _token_query(self, info: CorpusInfo, sae: SAEInfo, select: str, where: str = "TRUE", params=(),
                     tail: str = "") -> pl.DataFrame:
        src = self._token_source(info, sae)
        if src is None:
            src = "(SELECT * FROM (VALUES (0, 0, 0, 0, 0, 0.0::REAL, TRUE)) v(doc_idx, token_index, start, \"end\", " \
                  "feature, value, pooled) WHERE FALSE)"
        return self.query(f"SELECT {select} FROM {src} t WHERE {where} {tail}", list(params))

    def token_rows(self, info: CorpusInfo, sae: SAEInfo, *, features: list[int] | None = None,
                   doc_idx: list[int] | None = None) -> pl.DataFrame:
        """doc_idx, token_index, start, end, feature, value, pooled (only these features / documents when
        given), ordered by document, token, feature. pooled: the document's max-pool took this token."""
        return self._token_query(
            info, sae, f't.doc_idx, t.token_index, t.start, t."end", t.feature, t.value, {self._pooled(info, sae)} AS pooled',
            "(? OR t.feature IN (SELECT unnest(?::INTEGER[]))) AND (? OR t.doc_idx IN (SELECT unnest(?::INTEGER[])))",
            [features is None, list(features or []), doc_idx is None, list(doc_idx or [])],
            "ORDER BY t.doc_idx, t.token_index, t.feature")

    def token_positions(self, info: CorpusInfo, sae: SAEInfo, doc_min: int, doc_max: int,
                        doc_idx: list[int] | None = None) -> pl.DataFrame:
        """Every stored content token of documents doc_min..doc_max (and in doc_idx when given): doc_idx,
        token_index, start, end (a token where no feature fired leaves no row)."""
        return self._token_query(info, sae, 'DISTINCT t.doc_idx, t.token_index, t.start, t."end"',
                                 "t.doc_idx BETWEEN ? AND ? AND (? OR t.doc_idx IN (SELECT unnest(?::INTEGER[])))",
                                 [doc_min, doc_max, doc_idx is None, list(doc_idx or [])], "ORDER BY 1, 2")

    def top_documents(self, info: CorpusInfo, sae: SAEInfo, features: list[int], per_feature: int) -> pl.DataFrame:
        """feature, doc_idx of each feature's strongest documents (at most per_feature each)."""
        return self.query(
            "SELECT feature, doc_idx FROM activations WHERE corpus_id = ? AND sae_key = ? "
            "AND feature IN (SELECT unnest(?::INTEGER[])) "
            "QUALIFY row_number() OVER (PARTITION BY feature ORDER BY value DESC, doc_idx) <= ?",
            [info.corpus_id, sae.sae_key, list(features), per_feature])

    def doc_token_rows(self, info: CorpusInfo, sae: SAEInfo, doc_idx: int, features: list[int]) -> pl.DataFrame:
        """token_index, start, end, feature, value of one document's tokens where these features fire."""
        return self._token_query(
            info, sae, 't.token_index, t.start, t."end", t.feature, t.value',
            "t.doc_idx = ? AND t.feature IN (SELECT unnest(?::INTEGER[]))", [doc_idx, list(features)],
            "ORDER BY t.token_index, t.feature")

    def export_tokens(self, corpus: str, out: str | os.PathLike, *, sae: str | None = None,
                      features: list[int] | None = None, batch_rows: int = 1_000_000) -> int:
        """Write token rows (doc_id, token_index, token, start, end, feature, value, and pooled when the
        encoding skipped function tokens) to .parquet, .csv or .jsonl, streamed; returns the row count."""
        from saeembed.store.features import write_batches, export_target

        out, fmt = export_target(out)
        info = self.corpus(corpus)
        s = self.encoded_sae(info, sae)
        self.require_token_rows(info, s, "export --tokens")
        if features:
            s.check_features(features)
        src = self._token_source(info, s) or "(SELECT NULL::INTEGER AS doc_idx WHERE FALSE)"
        sql = (
            "SELECT d.doc_id, t.token_index, substring(d.text, t.start + 1, t.\"end\" - t.start) AS token, "
            f"t.start, t.\"end\", t.feature, t.value{', t.pooled' if self.skips_tokens(info, s) else ''} FROM {src} t "
            "JOIN documents d ON d.corpus_id = ? AND d.doc_idx = t.doc_idx "
            "WHERE (? OR t.feature IN (SELECT unnest(?::INTEGER[]))) ORDER BY t.doc_idx, t.token_index, t.feature")
        tmp = out.with_name(out.name + ".partial")
        try:
            reader = self.con.sql(sql, params=[info.corpus_id, not features, list(features or [])]
                                  ).to_arrow_reader(batch_rows)
            n = write_batches(reader, tmp, fmt)
            os.replace(tmp, out)
        except DAMAGE_ERRORS as e:
            raise self._damaged(e) from None
        finally:
            if tmp.exists():
                tmp.unlink()
        return n

    # --- re-pooling --------------------------------------------------------------------------------

    def set_pool(self, pool: str, encodings: list[tuple[CorpusInfo, SAEInfo]]) -> None:
        """From now on (this connection), `activations` of these encodings carry values pooled by `pool`:
        max (as stored), mean (sum over the document's content tokens / its content tokens, zeros
        included), sum, count (tokens where the feature fires) or binary (1.0 where it fires)."""
        if pool not in POOLS:
            raise InputError(f"unknown pooling {pool!r}; use {', '.join(POOLS)}")
        if pool == "max":
            self._pool = None
            self._refresh_activation_view()
            return
        keys = sorted({(i.corpus_id, s.sae_key) for i, s in encodings})
        if pool in NEEDS_TOKENS:
            parts = []
            for info, s in encodings:
                self.require_token_rows(info, s, f"--pool {pool}")
                src = self._token_source(info, s)
                if src:
                    parts.append(self._token_sums(info, s, src))
            body = "\nUNION ALL ".join(parts) or ("SELECT 0 AS corpus_id, 0 AS sae_key, 0 AS doc_idx, 0 AS feature, "
                                                  "0.0::DOUBLE AS total, NULL::BIGINT AS n_pooled WHERE FALSE")
            try:
                self.con.execute("CREATE OR REPLACE TEMP TABLE token_pool_sums AS " + body)
            except DAMAGE_ERRORS as e:
                raise self._damaged(e) from None
        self._pool = (pool, keys)
        self._pool_view()

    def _token_sums(self, info: CorpusInfo, s: SAEInfo, src: str) -> str:
        """Per (document, feature): the sum of its pooled tokens' values, and (when function tokens were
        skipped) the document's pooled tokens, the mean's divisor (else NULL: encoded_docs.n_tokens)."""
        head = f"SELECT {int(info.corpus_id)} AS corpus_id, {int(s.sae_key)} AS sae_key, t.doc_idx, t.feature, " \
               "sum(t.value::DOUBLE) AS total"
        if not self.skips_tokens(info, s):
            return f"{head}, NULL::BIGINT AS n_pooled FROM {src} t GROUP BY t.doc_idx, t.feature"
        # a pooled token where no feature fires leaves no row; TopK SAEs fire on every token
        return (f"{head}, any_value(n.n_pooled) AS n_pooled FROM {src} t JOIN (SELECT doc_idx, "
                f"count(DISTINCT token_index) AS n_pooled FROM {src} WHERE pooled GROUP BY doc_idx) n "
                "ON n.doc_idx = t.doc_idx WHERE t.pooled GROUP BY t.doc_idx, t.feature")

    def _pool_view(self) -> None:
        pool, keys = self._pool
        chosen = " OR ".join(f"(a.corpus_id = {int(c)} AND a.sae_key = {int(k)})" for c, k in keys) or "FALSE"
        joins = ""
        if pool in NEEDS_TOKENS:
            joins = ("LEFT JOIN temp.main.token_pool_sums p ON p.corpus_id = a.corpus_id AND p.sae_key = a.sae_key "
                     "AND p.doc_idx = a.doc_idx AND p.feature = a.feature "
                     "LEFT JOIN encoded_docs e ON e.corpus_id = a.corpus_id AND e.sae_key = a.sae_key "
                     "AND e.doc_idx = a.doc_idx")
        self.con.execute(
            "CREATE OR REPLACE TEMP VIEW activations AS SELECT a.corpus_id, a.sae_key, a.doc_idx, a.feature, "
            f"(CASE WHEN {chosen} THEN {_VALUE[pool]} ELSE a.value END)::REAL AS value, a.active_tokens, "
            f"a.span_start, a.span_end FROM ({self._activation_source()}) a {joins}")

    @property
    def pool(self) -> str:
        """The pooling the `activations` values of this connection carry."""
        return self._pool[0] if getattr(self, "_pool", None) else "max"
