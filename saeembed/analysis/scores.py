"""Saved classifiers and the per-document scores they give: reading and writing the `classifiers` and
`doc_scores` tables.

A binary classifier named `toxicity` stores one score per document under that name (P(positive));
a multi-class one stores one score per class under `toxicity.<class>`. These names become columns
that `saeembed filter` rules can use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import polars as pl

from saeembed.errors import InputError, StoreError
from saeembed.store import CorpusInfo, SAEInfo, Store

_NAME_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


def check_name(name: str) -> str:
    """Classifier names become filter columns: letters, digits, _ and -, starting with a letter."""
    name = str(name).strip()
    if not name or len(name) > 100 or not name[0].isalpha() or not set(name) <= _NAME_OK:
        raise InputError(
            f"classifier name {name!r} is not usable: use 1-100 letters, digits, '_' or '-', starting with a letter"
        )
    return name


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


def save_classifier(store: Store, name: str, sae: SAEInfo, kind: str, model: dict, params: dict, metrics: dict,
                    provenance: dict) -> None:
    """Write (or overwrite) a classifier under its name, in one transaction."""
    with store.transaction():
        store.con.execute("DELETE FROM classifiers WHERE name = ?", [name])
        store.con.execute(
            "INSERT INTO classifiers (name, sae_key, kind, model, params, metrics, provenance) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [name, sae.sae_key, kind, json.dumps(model), json.dumps(params, default=str),
             json.dumps(metrics, default=str), json.dumps(provenance, default=str)],
        )


def load_classifier(store: Store, name: str) -> SavedClassifier:
    rows = store.con.execute(
        "SELECT name, sae_key, kind, model, params, metrics, provenance, created_at FROM classifiers WHERE name = ?",
        [name],
    ).fetchall()
    if not rows:
        known = [r[0] for r in store.con.execute("SELECT name FROM classifiers ORDER BY name").fetchall()]
        hint = f"saved classifiers: {', '.join(known)}" if known else "none saved yet; run `saeembed classify train`"
        raise StoreError(f"no classifier named {name!r} ({hint})")
    n, key, kind, model, params, metrics, prov, created = rows[0]
    return SavedClassifier(n, store.sae_info(key), kind, json.loads(model), json.loads(params or "{}"),
                           json.loads(metrics or "{}"), json.loads(prov or "{}"), created)


def list_classifiers(store: Store) -> pl.DataFrame:
    return store.query(
        "SELECT c.name, c.kind, s.sae_hash AS sae, json_extract_string(c.provenance, '$.corpus') AS corpus, "
        "json_extract_string(c.params, '$.label_column') AS label_column, "
        "json_extract(c.metrics, '$.auroc')::DOUBLE AS auroc, c.created_at "
        "FROM classifiers c JOIN saes s USING (sae_key) ORDER BY c.name"
    )


def write_scores(store: Store, info: CorpusInfo, columns: dict[str, np.ndarray], doc_idx: np.ndarray) -> None:
    """Replace the stored scores of these score names for these documents of the corpus."""
    frames = [
        pl.DataFrame({"name": [n] * len(doc_idx), "doc_idx": np.asarray(doc_idx, dtype=np.int32),
                      "score": np.asarray(v, dtype=np.float64)})
        for n, v in columns.items()
    ]
    frame = pl.concat(frames) if frames else None
    if frame is None or frame.is_empty():
        return
    with store.transaction(), store.registered("_scores", frame):
        store.con.execute(
            "DELETE FROM doc_scores WHERE corpus_id = ? AND name IN (SELECT DISTINCT name FROM _scores) "
            "AND doc_idx IN (SELECT DISTINCT doc_idx FROM _scores)",
            [info.corpus_id],
        )
        store.con.execute("INSERT INTO doc_scores SELECT ?, name, doc_idx, score FROM _scores", [info.corpus_id])


def score_names(store: Store, info: CorpusInfo) -> list[str]:
    return [r[0] for r in store.con.execute(
        "SELECT DISTINCT name FROM doc_scores WHERE corpus_id = ? ORDER BY name", [info.corpus_id]
    ).fetchall()]


def read_scores(store: Store, info: CorpusInfo, names: list[str] | None = None) -> pl.DataFrame:
    """Wide frame: doc_idx plus one Float64 column per score name (null where a document has no score)."""
    names = score_names(store, info) if names is None else names
    base = store.query("SELECT doc_idx FROM documents WHERE corpus_id = ? ORDER BY doc_idx", [info.corpus_id])
    if not names:
        return base
    long = store.query(
        "SELECT name, doc_idx, score FROM doc_scores WHERE corpus_id = ? AND name IN (SELECT unnest(?))",
        [info.corpus_id, names],
    )
    for n in names:
        part = long.filter(pl.col("name") == n).select("doc_idx", pl.col("score").alias(n))
        base = base.join(part, on="doc_idx", how="left")
    return base
