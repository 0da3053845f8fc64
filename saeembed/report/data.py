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
    wins = [window(t, s, e, width) for t, s, e in zip(rows["text"], rows["span_start"], rows["span_end"])]
    return rows.with_columns(
        pl.Series("text", [w[0] for w in wins], pl.Utf8),
        pl.Series("span_start", [w[1] for w in wins], pl.Int64),
        pl.Series("span_end", [w[2] for w in wins], pl.Int64),
        pl.col("value").cast(pl.Float64), pl.col("rel").cast(pl.Float64).fill_null(1.0),
        pl.col("feature").cast(pl.Int64), pl.col("corpus_id").cast(pl.Int64), pl.col("doc_idx").cast(pl.Int64),
    ).select(EXEMPLAR_COLUMNS)


def frequency_diff(store: Store, a: str, b: str, *, top: int = 20, sae: str | None = None,
                   per_feature: int = 2) -> tuple[pl.DataFrame, dict, pl.DataFrame, SAEInfo]:
    """Interim input for `report diff` until the statistical diff lands: features over-represented on each
    side (analysis.frequency.distinctive_features) in the diff frame's columns (feature, label, freq_a,
    freq_b, diff, exemplar_a, exemplar_b), a summary (sizes and the length difference), exemplar windows
    for both sides, and the SAE."""
    from saeembed.analysis.frequency import distinctive_features, shared_sae

    s = shared_sae(store, [a, b], sae)
    fa = distinctive_features(store, a, [b], top=top, sae=s.sae_hash)
    fb = distinctive_features(store, b, [a], top=top, sae=s.sae_hash)
    side_a = fa.select("feature", "label", freq_a="freq", freq_b="freq_other", exemplar_a="exemplar")
    side_b = fb.select("feature", "label", freq_a="freq_other", freq_b="freq", exemplar_b="exemplar")
    frame = (
        pl.concat([side_a.with_columns(exemplar_b=pl.lit(None, pl.Utf8)),
                   side_b.with_columns(exemplar_a=pl.lit(None, pl.Utf8)).select(side_a.columns + ["exemplar_b"])])
        .unique("feature", keep="first", maintain_order=True)
        .with_columns(diff=pl.col("freq_a") - pl.col("freq_b"))
        .filter(pl.col("diff") != 0)
        .sort("diff", descending=True)
        .select("feature", "label", "freq_a", "freq_b", "diff", "exemplar_a", "exemplar_b")
    )
    ia, ib = store.corpus(a), store.corpus(b)
    lengths = dict(store.query(
        "SELECT corpus_id, avg(n_chars) FROM documents WHERE corpus_id IN (?, ?) GROUP BY corpus_id",
        [ia.corpus_id, ib.corpus_id]).iter_rows())
    la, lb = float(lengths.get(ia.corpus_id) or 0.0), float(lengths.get(ib.corpus_id) or 0.0)
    summary = {"a": a, "b": b, "n_a": ia.n_docs, "n_b": ib.n_docs, "mean_chars_a": round(la, 1),
               "mean_chars_b": round(lb, 1), "length_difference": round(la - lb, 1)}
    feats = frame["feature"].to_list()
    ex = pl.concat([
        exemplar_windows(store, s.sae_key, feats, corpus=a, per_feature=per_feature).with_columns(side=pl.lit("a")),
        exemplar_windows(store, s.sae_key, feats, corpus=b, per_feature=per_feature).with_columns(side=pl.lit("b")),
    ])
    return frame, summary, ex, s
