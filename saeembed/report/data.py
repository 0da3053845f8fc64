"""What reports read from the store beyond an analysis's own frame: provenance and exemplar windows
with the activating span's position and strength (so the page can shade it)."""

from __future__ import annotations

import sys

import polars as pl

from saeembed import __version__
from saeembed.store import SAEInfo, Store
from saeembed.report.highlight import window

EXEMPLAR_COLUMNS = ("feature", "corpus", "doc_id", "value", "rel", "text", "span_start", "span_end", "corpus_id", "doc_idx")


def provenance(store: Store, sae: SAEInfo | None, *, analysis: str, params: dict | None = None,
               corpora: list[str] | None = None) -> dict:
    """Everything needed to reproduce a page: parameters, SAE and model identity, pooling, corpora, version."""
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
                                      if k in ("pooling", "exclude_special", "chat_template", "window", "skip_tokens")}}
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
    corpus_id = store.corpus(corpus).corpus_id if corpus is not None else None
    rows = store.exemplar_rows(sae_key, features, corpus_id=corpus_id, per_feature=per_feature)
    if rows.is_empty():
        return empty
    return _windows(rows, width)


def selection_windows(store: Store, sel, features: list[int], *, per_feature: int = 2, width: int = 80) -> pl.DataFrame:
    """Like exemplar_windows, but the strongest documents inside a Selection (a filtered slice of a corpus):
    the exemplars table holds corpus-wide tops, which may lie outside the slice."""
    if not features or sel.n_docs == 0:
        return exemplar_windows(store, sel.sae.sae_key, [])
    rows = store.strongest_in_docs(sel.corpus, sel.sae, sel.doc_idx, features, per_feature=per_feature)
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


# --- rows the cluster, search, classify and filter pages need beyond their analysis's own frames -------

def saved_clustering(store: Store, name: str):
    """A clustering saved by `saeembed cluster` read back as (Selection, ClusterResult): assignments and
    2-D layout as stored, cluster descriptions recomputed from the store (they are not saved)."""
    import json

    import numpy as np

    from saeembed.analysis.cluster import ClusterResult, cluster_table, describe_clusters
    from saeembed.analysis.cluster_words import cluster_words
    from saeembed.analysis.selection import Selection

    saved = store.stored_clustering(name)
    cid, info, sae, a = saved["clustering_id"], saved["corpus"], saved["sae"], saved["assignments"]
    sel = Selection(info, sae, a["doc_idx"].to_numpy().astype(np.int64), f"{info.name} ({name})")
    ids = store.documents(info, text=False, metadata=False, doc_idx=a["doc_idx"].to_list()).select("doc_idx", "doc_id")
    assignments = a.join(ids, on="doc_idx", how="left").select("doc_idx", "doc_id", "cluster", "probability", "x", "y")
    labels = assignments["cluster"].to_numpy()
    params = json.loads(saved["params"] or "{}")
    chosen = [int(f) for f in json.loads(saved["features"] or "[]")]
    lab = dict(store.labels(sae.sae_key, chosen).select("feature", "label").iter_rows()) if chosen else {}
    features = pl.DataFrame({"feature": chosen, "label": [lab.get(f) for f in chosen]},
                            schema={"feature": pl.Int64, "label": pl.Utf8})
    n_empty = 0
    if chosen:  # documents where none of the clustered-on features fire (parked with the noise)
        hit = store.count_docs_with_any(info.corpus_id, sae.sae_key, chosen, a["doc_idx"].to_list())
        n_empty = int(a.height - hit)
    descriptions = describe_clusters(store, sel, labels, top=int(params.get("describe_top") or 5))
    table = cluster_table(labels, descriptions, words=cluster_words(store, sel, labels))
    result = ClusterResult(name, int(cid), assignments, table, descriptions, features,
                           params, n_noise=int((labels == -1).sum()), n_empty=n_empty)
    return sel, result


def cluster_map(store: Store, info, assignments: pl.DataFrame, *, width: int = 80) -> pl.DataFrame:
    """The cluster page's points: doc_id, cluster, x, y and a one-line snippet of each document (its tooltip)."""
    texts = store.documents(info, metadata=False, doc_idx=assignments["doc_idx"].to_list()).select(
        "doc_idx", snippet=pl.col("text").str.replace_all(r"\s+", " ").str.slice(0, width))
    return assignments.join(texts, on="doc_idx", how="left", maintain_order="left").select(
        "doc_id", "cluster", pl.col("x").cast(pl.Float64), pl.col("y").cast(pl.Float64), "snippet")


def search_rows(results: pl.DataFrame) -> pl.DataFrame:
    """Search results (analysis.retrieve.search) with `matched_features`: the features that scored each
    document, strongest contribution first, as `#id · label` (the snippet keeps its «marked» spans)."""
    from saeembed.report.pages import feature_name

    if "matched" not in results.columns:
        return results
    names = [[feature_name(m["feature"], m.get("label")) for m in (ms or []) if (m.get("contribution") or 0) > 0]
             for ms in results["matched"].to_list()]
    return results.with_columns(matched_features=pl.Series(names, dtype=pl.List(pl.Utf8))).drop("matched")


_METRIC_KEYS = ("n", "auroc", "average_precision", "f1", "macro_f1", "accuracy", "positive_rate", "C",
                "rows_seen_in_training")


def classifier_report(store: Store, name: str, *, corpus: str | None = None, label_column: str | None = None,
                      where: str | None = None, baselines=()) -> dict:
    """What the classifier page shows: its precision-recall points (`curve`: threshold, precision, recall),
    scalar `metrics`, signed `weights` (feature, weight, label[, class]) and the classifier itself (`saved`).

    Without `corpus`: the held-out evaluation saved at training time. With `corpus` and `label_column`:
    a fresh (transfer) evaluation on that labelled corpus (analysis.classify.evaluate_classifier)."""
    from saeembed.analysis.classify import LinearProbe, evaluate_classifier, model_from_json
    from saeembed.errors import InputError

    if (corpus is None) != (label_column is None):
        raise InputError("give --corpus and --label-column together (or neither, for the saved held-out evaluation)")
    clf = store.load_classifier(name)
    if corpus is None:
        m = dict(clf.metrics or {})
        if not m.get("n"):
            raise InputError(f"classifier {name!r} ({clf.kind}) has no saved held-out evaluation; "
                             "evaluate it on a labelled corpus: --corpus C --label-column COL")
        evaluated_on = f"held-out split of {clf.provenance.get('corpus', '?')}"
    else:
        m = evaluate_classifier(store, name, corpus, label_column, where=where, baselines=baselines)
        evaluated_on = corpus + (f" where {where}" if where else "")
    metrics = {"evaluated on": evaluated_on, **{k: m[k] for k in _METRIC_KEYS if m.get(k) is not None}}
    for b, bm in (m.get("baselines") or {}).items():
        for k in ("auroc", "f1"):
            if bm.get(k) is not None:
                metrics[f"{b} baseline {k}"] = bm[k]
    curve = pl.DataFrame(schema={"threshold": pl.Float64, "precision": pl.Float64, "recall": pl.Float64})
    points = m.get("pr_curve") or m.get("pr_table")  # classifiers saved before pr_curve existed: the table
    if points:
        curve = (pl.DataFrame(points).cast({"precision": pl.Float64, "recall": pl.Float64})
                 .with_columns(pl.col("precision", "recall").fill_nan(None)).drop_nulls(["precision", "recall"])
                 .with_columns(model=pl.lit(name)))
    model = model_from_json(clf.model)
    rows = []
    if isinstance(model, LinearProbe):
        for j, w in enumerate(model.weights):
            cls = model.positive if not model.multiclass else model.classes[j]
            rows += [(int(f), float(v), str(cls)) for f, v in w.items() if v != 0]
    else:  # zero-shot: the matched features' weights
        rows = [(int(f), float(v), "match") for f, v in model.weights.items() if v != 0]
    weights = pl.DataFrame(rows, schema={"feature": pl.Int64, "weight": pl.Float64, "class": pl.Utf8}, orient="row")
    lab = dict(store.labels(clf.sae.sae_key, weights["feature"].unique().to_list()).select("feature", "label")
               .iter_rows()) if rows else {}
    label = [lab.get(f) for f in weights["feature"]]
    if getattr(model, "multiclass", False):  # one weight per (class, feature): say which class
        label = [f"{lb + ' ' if lb else ''}(class {c})" for lb, c in zip(label, weights["class"])]
    weights = weights.with_columns(label=pl.Series(label, dtype=pl.Utf8))
    return {"curve": curve, "metrics": metrics, "weights": weights, "saved": clf, "evaluation": m}


def marked_samples(store: Store, info, sae: SAEInfo | None, samples: pl.DataFrame | None, dropped: pl.DataFrame,
                   features: list[int] | None) -> pl.DataFrame | None:
    """Samples of dropped rows (analysis.filter) as `snippet`s with the spans of the features
    over-represented among dropped rows marked «…» (strongest first), so the page shades them."""
    from saeembed.analysis.retrieve import highlight

    if samples is None or samples.is_empty():
        return samples
    picked = samples.join(dropped.select("doc_id", "doc_idx"), on="doc_id", how="left", maintain_order="left")
    idx = [int(d) for d in picked["doc_idx"].to_list() if d is not None]
    text = dict(store.documents(info, metadata=False, doc_idx=idx).select("doc_idx", "text").iter_rows())
    spans: dict[int, list[tuple[int, int, int]]] = {}
    feats = [int(f) for f in features or []]
    if sae is not None and feats and idx:
        rank = {f: r for r, f in enumerate(feats)}
        acts = store.feature_spans(info, sae, idx, feats)
        for d, f, s, e in acts.iter_rows():
            spans.setdefault(d, []).append((rank[f], s, e))
    snippets = []
    for d in picked["doc_idx"].to_list():
        t = text.get(d, "") if d is not None else ""
        snippets.append(highlight(t, [(s, e) for _, s, e in sorted(spans.get(d, []))]))
    keep = [c for c in ("rule", "doc_id", "reason") if c in picked.columns]
    return picked.select(keep).with_columns(snippet=pl.Series(snippets, dtype=pl.Utf8))
