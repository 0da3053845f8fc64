"""What reports read from the store beyond an analysis's own frame: provenance and exemplar windows
with the activating span's position and strength (so the page can shade it)."""

from __future__ import annotations

import sys

import polars as pl

from saeembed.store import SAEInfo, Store
from saeembed.report.highlight import window

EXEMPLAR_COLUMNS = ("feature", "corpus", "doc_id", "value", "rel", "text", "span_start", "span_end", "corpus_id", "doc_idx")


def provenance(store: Store, sae: SAEInfo | None, *, analysis: str, params: dict | None = None,
               corpora: list[str] | None = None) -> dict:
    """Everything needed to reproduce a page: parameters, SAE and model identity, pooling, corpora, version."""
    from saeembed import __version__

    out: dict = {"analysis": analysis, "parameters": dict(params or {})}
    if sae is not None:
        out["sae"] = {"hash": sae.sae_hash, "architecture": sae.architecture, "d_in": sae.d_in, "d_sae": sae.d_sae,
                      "k": sae.k, "hook": sae.hook, "source": sae.source}
        out["model"] = sae.model
    for name in corpora or []:
        info = store.corpus(name)
        entry = {"documents": info.n_docs}
        if sae is not None:
            try:
                enc = store.encoding(info, sae)
            except Exception:  # a corpus without this encoding still gets its size listed
                enc = None
            if enc:
                entry |= {"model": enc["model"], "hook": enc["hook"], "status": enc["status"],
                          "pooling": {k: v for k, v in enc["params"].items()
                                      if k in ("pooling", "exclude_special", "chat_template", "window")}}
                out["model"] = out.get("model") or enc["model"]
        out.setdefault("corpora", {})[name] = entry
    out["store"] = str(store.path)
    out["command"] = " ".join(["saeembed", *sys.argv[1:]]) if sys.argv and "saeembed" in sys.argv[0] else None
    out["saeembed_version"] = __version__
    return {k: v for k, v in out.items() if v is not None}


def exemplar_windows(store: Store, sae_key: int, features: list[int], *, corpus: str | None = None,
                     per_feature: int = 3, width: int = 80) -> pl.DataFrame:
    """Top stored exemplars of each feature as text windows: feature, corpus, doc_id, value, rel (value over
    the feature's strongest stored activation, 0-1), text (the window), span_start/span_end (inside it)."""
    empty = pl.DataFrame(schema={"feature": pl.Int64, "corpus": pl.Utf8, "doc_id": pl.Utf8, "value": pl.Float64,
                                 "rel": pl.Float64, "text": pl.Utf8, "span_start": pl.Int64, "span_end": pl.Int64,
                                 "corpus_id": pl.Int64, "doc_idx": pl.Int64})
    if not features:
        return empty
    feats = [int(f) for f in features]
    where, corpus_param = "", []
    if corpus is not None:
        where = " AND x.corpus_id = ?"
        corpus_param = [store.corpus(corpus).corpus_id]
    rows = store.query(
        f"""
        WITH top AS (
            SELECT feature, max(value) AS vmax FROM exemplars
            WHERE sae_key = ? AND feature IN (SELECT unnest(?)) GROUP BY feature)
        SELECT x.feature, c.name AS corpus, d.doc_id, x.value, x.value / nullif(t.vmax, 0) AS rel,
               d.text, x.span_start, x.span_end, x.corpus_id, x.doc_idx
        FROM exemplars x
        JOIN top t USING (feature)
        JOIN documents d ON d.corpus_id = x.corpus_id AND d.doc_idx = x.doc_idx
        JOIN corpora c ON c.corpus_id = x.corpus_id
        WHERE x.sae_key = ?{where}
        QUALIFY row_number() OVER (PARTITION BY x.feature ORDER BY x.value DESC, x.corpus_id, x.rank) <= ?
        ORDER BY x.feature, x.value DESC
        """,
        [sae_key, feats, sae_key, *corpus_param, per_feature],
    )
    if rows.is_empty():
        return empty
    return _windows(rows, width)


def selection_windows(store: Store, sel, features: list[int], *, per_feature: int = 2, width: int = 80) -> pl.DataFrame:
    """Like exemplar_windows, but the strongest documents inside a Selection (a filtered slice of a corpus):
    the exemplars table holds corpus-wide tops, which may lie outside the slice."""
    import numpy as np
    import pyarrow as pa

    if not features or sel.n_docs == 0:
        return exemplar_windows(store, sel.sae.sae_key, [])
    store.con.register("_win_docs", pa.table({"doc_idx": np.asarray(sel.doc_idx, dtype=np.int32)}))
    try:
        rows = store.query(
            """
            WITH top AS (SELECT feature, max(value) AS vmax FROM exemplars
                         WHERE sae_key = ? AND feature IN (SELECT unnest(?)) GROUP BY feature)
            SELECT a.feature::BIGINT AS feature, ? AS corpus, d.doc_id, a.value::DOUBLE AS value,
                   (a.value / nullif(greatest(t.vmax, a.value), 0))::DOUBLE AS rel, d.text,
                   a.span_start, a.span_end, a.corpus_id::BIGINT AS corpus_id, a.doc_idx::BIGINT AS doc_idx
            FROM activations a
            JOIN _win_docs s ON a.doc_idx = s.doc_idx
            JOIN documents d ON d.corpus_id = a.corpus_id AND d.doc_idx = a.doc_idx
            LEFT JOIN top t ON t.feature = a.feature
            WHERE a.corpus_id = ? AND a.sae_key = ? AND a.feature IN (SELECT unnest(?))
            QUALIFY row_number() OVER (PARTITION BY a.feature ORDER BY a.value DESC, a.doc_idx) <= ?
            ORDER BY a.feature, a.value DESC
            """,
            [sel.sae.sae_key, [int(f) for f in features], sel.corpus.name, sel.corpus.corpus_id, sel.sae.sae_key,
             [int(f) for f in features], per_feature],
        )
    finally:
        store.con.unregister("_win_docs")
    return _windows(rows, width)


def _windows(rows: pl.DataFrame, width: int) -> pl.DataFrame:
    wins = [window(t, s, e, width) for t, s, e in zip(rows["text"], rows["span_start"], rows["span_end"])]
    return rows.with_columns(
        pl.Series("text", [w[0] for w in wins], pl.Utf8),
        pl.Series("span_start", [w[1] for w in wins], pl.Int64),
        pl.Series("span_end", [w[2] for w in wins], pl.Int64),
        pl.col("value").cast(pl.Float64), pl.col("rel").cast(pl.Float64).fill_null(1.0),
        pl.col("feature").cast(pl.Int64), pl.col("corpus_id").cast(pl.Int64), pl.col("doc_idx").cast(pl.Int64),
    ).select(EXEMPLAR_COLUMNS)
