"""SAEs registered in the store, encodings of corpora with them (begin, write, finish) and SAE probes."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from saeembed.errors import StoreError
from saeembed.store.records import CorpusInfo, SAEInfo

# Encode parameters that change the stored numbers: a resumed encode must use the same ones.
POOLING_PARAMS = ("pooling", "exclude_special", "chat_template", "window", "prompt_column", "messages_column", "roles",
                  "skip_tokens")


class EncodingsMixin:
    """Store methods for SAEs, encodings and probes."""

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
        info = self.find_sae(sae_key)
        if info is None:
            raise StoreError(f"no SAE with key {sae_key} in the store")
        return info

    def find_sae(self, sae_key: int) -> SAEInfo | None:
        row = self._all(
            "SELECT sae_key, sae_hash, model, hook, architecture, k, d_in, d_sae, source FROM saes WHERE sae_key = ?",
            [sae_key],
        )
        return SAEInfo(*row[0]) if row else None

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
        self.check_encoding(info.corpus_id, rows[0][0])  # a missing, damaged or foreign shard is named here
        return self.sae_info(rows[0][0])

    def shared_sae(self, corpora: list[str], sae: str | None = None) -> SAEInfo:
        """The one SAE all these corpora are encoded with (comparisons across SAEs mean nothing)."""
        infos = [self.encoded_sae(c, sae) for c in corpora]
        if len({i.sae_key for i in infos}) != 1:
            raise StoreError(
                "these corpora are encoded with different SAEs ("
                + ", ".join(f"{c}: {i.sae_hash}" for c, i in zip(corpora, infos))
                + "); encode them with the same SAE to compare them"
            )
        return infos[0]

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
