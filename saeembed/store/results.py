"""Saved results: clusterings with their per-document assignments, classifiers, the per-document scores
classifiers give, and the activation reads the cluster and classify analyses need.

A saved result's name becomes a filter column (`cluster.NAME`, `NAME` or `NAME.<class>`), so names are
checked by `store.names.check_name` before anything is written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import polars as pl

from saeembed.errors import InputError, StoreError
from saeembed.store.records import CorpusInfo, SAEInfo


def clustering_exists_message(name: str, corpus: str | None) -> str:
    """What to say when a clustering would overwrite one already saved under its name."""
    of = f" (of corpus {corpus!r})" if corpus else ""
    return (f"a clustering named {name!r} is already saved{of}; pass --replace to overwrite it, "
            "or choose another --name")


@dataclass(frozen=True)
class SavedClassifier:
    name: str
    sae: SAEInfo
    kind: str
    model: dict
    params: dict
    metrics: dict
    provenance: dict
    created_at: object = None


class ResultsMixin:
    """Store methods that save and read clusterings, classifiers and document scores."""

    # --- clusterings ------------------------------------------------------------------------------

    def save_clustering(self, name: str, info: CorpusInfo, sae: SAEInfo, params: dict,
                        assignments: pl.DataFrame, *, replace: bool = False) -> int:
        """Store a clustering under `name`: its params (with the features clustered on under "features")
        and assignments (doc_idx, cluster, probability, x, y). A clustering of that name is replaced only
        with replace=True; otherwise this refuses and nothing is written. Returns its id."""
        if self.read_only:
            raise StoreError("store is open read-only; cannot save the clustering")
        a = assignments.select("doc_idx", "cluster", "probability", "x", "y")
        with self.transaction():
            old = self._one("SELECT clustering_id FROM clusterings WHERE name = ?", [name])
            if old is not None and not replace:
                raise InputError(clustering_exists_message(name, self.clustering_corpus(name)))
            if old is not None:
                self.con.execute("DELETE FROM cluster_assignments WHERE clustering_id = ?", [old])
                self.con.execute("DELETE FROM clusterings WHERE clustering_id = ?", [old])
            cid = int(self._one("SELECT coalesce(max(clustering_id), 0) + 1 FROM clusterings"))
            self.con.execute(
                "INSERT INTO clusterings (clustering_id, name, corpus_id, sae_key, params, features) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [cid, name, info.corpus_id, sae.sae_key, json.dumps(params, default=str),
                 json.dumps(params["features"])],
            )
            with self.registered("_assign", a):
                self.con.execute(
                    "INSERT INTO cluster_assignments SELECT ?, doc_idx, cluster, probability, x, y FROM _assign", [cid])
        return cid

    def clustering_corpus(self, name: str) -> str | None:
        """The corpus of the clustering saved as `name` ('' when that corpus is gone); None when no
        clustering has that name."""
        return self._one("SELECT coalesce(co.name, '') FROM clusterings c LEFT JOIN corpora co USING (corpus_id) "
                         "WHERE c.name = ?", [name])

    def clusterings(self, corpus: str | None = None) -> pl.DataFrame:
        """Saved clusterings (of one corpus, or all): name, corpus, clusters, noise_share, docs, created_at, params."""
        return self.query(
            """
            SELECT c.name, co.name AS corpus, count(DISTINCT a.cluster) FILTER (WHERE a.cluster >= 0) AS clusters,
                   avg((a.cluster = -1)::INT) AS noise_share, count(a.doc_idx) AS docs, c.created_at, c.params
            FROM clusterings c JOIN corpora co USING (corpus_id)
            LEFT JOIN cluster_assignments a USING (clustering_id)
            WHERE (? OR co.name = ?)
            GROUP BY ALL ORDER BY c.created_at
            """,
            [corpus is None, corpus],
        )

    # --- classifiers ------------------------------------------------------------------------------

    def save_classifier(self, name: str, sae: SAEInfo, kind: str, model: dict, params: dict, metrics: dict,
                        provenance: dict) -> None:
        """Write (or overwrite) a classifier under its name, in one transaction."""
        with self.transaction():
            self.con.execute("DELETE FROM classifiers WHERE name = ?", [name])
            self.con.execute(
                "INSERT INTO classifiers (name, sae_key, kind, model, params, metrics, provenance) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [name, sae.sae_key, kind, json.dumps(model), json.dumps(params, default=str),
                 json.dumps(metrics, default=str), json.dumps(provenance, default=str)],
            )

    def load_classifier(self, name: str) -> SavedClassifier:
        rows = self._all(
            "SELECT name, sae_key, kind, model, params, metrics, provenance, created_at FROM classifiers WHERE name = ?",
            [name],
        )
        if not rows:
            known = [r[0] for r in self._all("SELECT name FROM classifiers ORDER BY name")]
            hint = f"saved classifiers: {', '.join(known)}" if known else "none saved yet; run `saeembed classify train`"
            raise StoreError(f"no classifier named {name!r} ({hint})")
        n, key, kind, model, params, metrics, prov, created = rows[0]
        return SavedClassifier(n, self.sae_info(key), kind, json.loads(model), json.loads(params or "{}"),
                               json.loads(metrics or "{}"), json.loads(prov or "{}"), created)

    def classifiers(self) -> pl.DataFrame:
        """Saved classifiers: name, kind, sae, corpus, label_column, auroc, created_at."""
        return self.query(
            "SELECT c.name, c.kind, s.sae_hash AS sae, json_extract_string(c.provenance, '$.corpus') AS corpus, "
            "json_extract_string(c.params, '$.label_column') AS label_column, "
            "json_extract(c.metrics, '$.auroc')::DOUBLE AS auroc, c.created_at "
            "FROM classifiers c JOIN saes s USING (sae_key) ORDER BY c.name"
        )

    # --- document scores --------------------------------------------------------------------------

    def write_doc_scores(self, info: CorpusInfo, columns: dict[str, np.ndarray], doc_idx: np.ndarray) -> None:
        """Replace the stored scores of these score names for these documents of the corpus."""
        frames = [
            pl.DataFrame({"name": [n] * len(doc_idx), "doc_idx": np.asarray(doc_idx, dtype=np.int32),
                          "score": np.asarray(v, dtype=np.float64)})
            for n, v in columns.items()
        ]
        frame = pl.concat(frames) if frames else None
        if frame is None or frame.is_empty():
            return
        with self.transaction(), self.registered("_scores", frame):
            self.con.execute(
                "DELETE FROM doc_scores WHERE corpus_id = ? AND name IN (SELECT DISTINCT name FROM _scores) "
                "AND doc_idx IN (SELECT DISTINCT doc_idx FROM _scores)",
                [info.corpus_id],
            )
            self.con.execute("INSERT INTO doc_scores SELECT ?, name, doc_idx, score FROM _scores", [info.corpus_id])

    def score_names(self, info: CorpusInfo) -> list[str]:
        """The score names stored for the corpus's documents."""
        return [r[0] for r in self._all("SELECT DISTINCT name FROM doc_scores WHERE corpus_id = ? ORDER BY name",
                                        [info.corpus_id])]

    def doc_scores(self, info: CorpusInfo, names: list[str] | None = None) -> pl.DataFrame:
        """Wide frame: doc_idx plus one Float64 column per score name (null where a document has no score)."""
        names = self.score_names(info) if names is None else names
        base = self.query("SELECT doc_idx FROM documents WHERE corpus_id = ? ORDER BY doc_idx", [info.corpus_id])
        if not names:
            return base
        long = self.query(
            "SELECT name, doc_idx, score FROM doc_scores WHERE corpus_id = ? AND name IN (SELECT unnest(?))",
            [info.corpus_id, names],
        )
        for n in names:
            part = long.filter(pl.col("name") == n).select("doc_idx", pl.col("score").alias(n))
            base = base.join(part, on="doc_idx", how="left")
        return base

    # --- activation reads for clustering and classifying -------------------------------------------

    def encoded_sae_hashes(self, info: CorpusInfo) -> list[str]:
        """Hashes of every SAE the corpus is encoded with."""
        return [r[0] for r in self._all(
            "SELECT s.sae_hash FROM encodings e JOIN saes s USING (sae_key) WHERE e.corpus_id = ?", [info.corpus_id])]

    def feature_doc_counts(self, info: CorpusInfo, sae: SAEInfo, doc_idx: list[int]) -> pl.DataFrame:
        """feature, docs: how many of these documents each feature fires on."""
        return self.query(
            "SELECT feature, count(*) AS docs FROM activations WHERE corpus_id = ? AND sae_key = ? "
            "AND doc_idx IN (SELECT unnest(?)) GROUP BY feature",
            [info.corpus_id, sae.sae_key, doc_idx],
        )

    def feature_quantiles(self, info: CorpusInfo, sae: SAEInfo, features: list[int], q: float) -> pl.DataFrame:
        """feature, scale: the q-quantile of each feature's values over the corpus documents it fires on."""
        return self.query(
            "SELECT feature, quantile_cont(value, ?) AS scale FROM activations "
            "WHERE corpus_id = ? AND sae_key = ? AND feature IN (SELECT unnest(?)) GROUP BY feature",
            [q, info.corpus_id, sae.sae_key, features],
        )

    def stored_clustering(self, name: str) -> dict:
        """A clustering saved by `saeembed cluster`, as stored: clustering_id, corpus (CorpusInfo), sae (SAEInfo),
        params and features (JSON text), assignments (doc_idx, cluster, probability, x, y by doc_idx)."""
        row = self._all("SELECT clustering_id, corpus_id, sae_key, params, features FROM clusterings WHERE name = ?",
                        [name])
        if not row:
            known = [r[0] for r in self._all("SELECT name FROM clusterings ORDER BY name")]
            hint = f"saved: {', '.join(known)}" if known else "none saved yet; run `saeembed cluster CORPUS`"
            raise StoreError(f"no saved clustering named {name!r} ({hint})")
        cid, corpus_id, sae_key, params, feats = row[0]
        corpus = self._one("SELECT name FROM corpora WHERE corpus_id = ?", [corpus_id])
        if corpus is None:
            raise StoreError(f"clustering {name!r} belongs to a corpus that is no longer in the store")
        info, sae = self.corpus(corpus), self.sae_info(sae_key)
        a = self.query("SELECT doc_idx::BIGINT AS doc_idx, cluster::BIGINT AS cluster, probability, x, y "
                       "FROM cluster_assignments WHERE clustering_id = ? ORDER BY doc_idx", [cid])
        if a.is_empty():
            raise StoreError(f"clustering {name!r} has no stored assignments")
        return {"clustering_id": cid, "corpus": info, "sae": sae, "params": params, "features": feats,
                "assignments": a}
