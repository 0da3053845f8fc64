"""Interpretable classifiers on SAE embeddings: sparse (L1 / elastic-net) logistic-regression probes.

`train_classifier` fits a probe on a labelled corpus with the regularisation strength chosen by
cross-validation on the training split only, evaluates it on a held-out split (seeded, stratified, or
grouped when rows come in pairs), and saves it in the store: weights as JSON keyed by feature, the
SAE's identity, the split and the parameters. Its features are the probe's explanation: the largest
positive and negative weights, with their labels and exemplars.

Honesty: the same split trains a dense baseline (logistic regression on sentence embeddings) and a
TF-IDF baseline, reported beside the probe. Everything stays sparse: the probe reads scipy CSR
from the store; inputs are scaled by each feature's max |value| on the training split (MaxAbs keeps
sparsity), and that scale is saved with the weights.

This module trains; the rest is split by job and importable from here: classify_model (the saved
probe and zero-shot model), classify_fit (labels, splits, cross-validation, baselines), classify_metrics,
classify_apply (apply and evaluate a saved classifier), classify_zeroshot.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np
import polars as pl

from saeembed import __version__
from saeembed.analysis.classify_apply import _score_corpus, apply_classifier, evaluate_classifier
from saeembed.analysis.classify_fit import (BASELINES, Progress, ProbeConfig, _Baseline, _groups, _labels, _maxabs,
                                            _scaled, _to_probe, fit_cv, split_indices)
from saeembed.analysis.classify_metrics import THRESHOLDS, _nan_to_none, metrics, pr_curve, pr_table
from saeembed.analysis.classify_model import LinearProbe, ZeroShotModel, model_from_json
from saeembed.analysis.classify_zeroshot import ZeroShotResult, zero_shot
from saeembed.analysis.selection import Selection, embedding_matrix, require_docs, select
from saeembed.errors import InputError
from saeembed.store import Store
from saeembed.store.names import check_name

__all__ = ["BASELINES", "THRESHOLDS", "LinearProbe", "ProbeConfig", "TrainResult", "ZeroShotModel", "ZeroShotResult",
           "apply_classifier", "evaluate_classifier", "fit_cv", "metrics", "model_from_json", "pr_curve", "pr_table",
           "split_indices", "top_features", "train_classifier", "zero_shot"]


@dataclass
class TrainResult:
    name: str
    metrics: dict  # held-out metrics of the SAE probe (auroc, f1, macro_f1, ...)
    pr: pl.DataFrame  # precision-recall table on the held-out split (binary)
    top_features: pl.DataFrame  # largest +/- weights with label and exemplar
    cv: pl.DataFrame  # C grid and cross-validated score
    baselines: dict = field(default_factory=dict)  # kind -> metrics on the same split
    info: dict = field(default_factory=dict)  # classes, sizes, C, features used, sae, seconds
    curve: pl.DataFrame = field(default_factory=pl.DataFrame)  # pr_curve: every distinct threshold (binary)

    def to_dict(self) -> dict:
        out = {"name": self.name, **self.metrics, **self.info}
        if self.baselines:
            first = next(iter(self.baselines))
            out["baseline"] = {"kind": first, **self.baselines[first]}
            out["baselines"] = self.baselines
        out["pr_table"] = self.pr.to_dicts()
        out["pr_curve"] = self.curve.to_dicts()
        out["top_features"] = self.top_features.to_dicts()
        out["cv"] = self.cv.to_dicts()
        return _nan_to_none(out)


def train_classifier(
    store: Store,
    corpus: str,
    label_column: str,
    name: str,
    *,
    where: str | None = None,
    sae: str | None = None,
    config: ProbeConfig | None = None,
    baselines: Sequence[str] = (),
    positive=None,
    group_column: str | None = None,
    top: int = 10,
    kind: str = "probe",
    progress: Progress | None = None,
) -> TrainResult:
    """Fit, evaluate on a held-out split, save under `name`, and score the whole corpus."""
    cfg = config or ProbeConfig()
    if cfg.penalty not in ("l1", "elasticnet"):
        raise InputError(f"unknown penalty {cfg.penalty!r}; use l1 or elasticnet")
    name = check_name(name, "classifier")
    for b in baselines:
        if b not in BASELINES:
            raise InputError(f"unknown baseline {b!r}; use {' or '.join(BASELINES)}")
    t0 = time.perf_counter()
    sel = require_docs(select(store, corpus, where=where, sae=sae))
    doc_idx, y, classes, positive = _labels(store, sel, label_column, positive)
    groups = _groups(store, sel, doc_idx, group_column)
    tr, te = split_indices(y, test_size=cfg.test_size, seed=cfg.seed, groups=groups)
    if len(np.unique(y[tr])) < len(classes):
        raise InputError("the training split misses a class; label more documents or lower --test-size")
    sub = Selection(sel.corpus, sel.sae, doc_idx, sel.name)
    X = embedding_matrix(store, sub, binary=cfg.binary)
    scale = _maxabs(X[tr])
    Xs = _scaled(X, scale)
    if progress:
        progress(f"{len(tr)} training / {len(te)} held-out documents, {len(classes)} classes; cross-validating C")
    model, C, cv = fit_cv(Xs[tr], y[tr], cfg, groups=None if groups is None else groups[tr], progress=progress)
    probe = _to_probe(model, scale, classes, positive, cfg.binary)
    n_classes = len(classes)
    p_test = probe.predict_proba(X[te])
    held = metrics(y[te], p_test, n_classes)
    pr = pr_table(y[te], p_test) if n_classes == 2 else pl.DataFrame()
    curve = pr_curve(y[te], p_test) if n_classes == 2 else pl.DataFrame()
    base = {}
    for b in baselines:
        if progress:
            progress(f"baseline {b}")
        bl = _Baseline(b, cfg, store).fit(sub, doc_idx[tr], y[tr], None if groups is None else groups[tr])
        base[b] = metrics(y[te], bl.predict(sub, doc_idx[te]), n_classes) | {"C": bl.C}
    tops = top_features(store, probe, sel, X[tr], y[tr], top=top)
    info = {
        "classes": classes, "positive": positive, "n_train": int(len(tr)), "n_test": int(len(te)), "C": C,
        "features_used": len(probe.features), "sae": sel.sae.sae_hash, "seconds": round(time.perf_counter() - t0, 2),
    }
    params = {"label_column": label_column, "where": where, "group_column": group_column, "config": asdict(cfg),
              "train_doc_idx": doc_idx[tr].tolist(), "test_doc_idx": doc_idx[te].tolist()}
    provenance = {"corpus": sel.corpus.name, "corpus_docs": sel.corpus.n_docs, "sae_hash": sel.sae.sae_hash,
                  "sae_model": sel.sae.model, "sae_hook": sel.sae.hook, "d_sae": sel.sae.d_sae,
                  "saeembed": __version__}
    all_metrics = {**held, "C": C, "cv": cv.to_dicts(), "pr_table": pr.to_dicts(), "pr_curve": curve.to_dicts(),
                   "baselines": base}
    with store.transaction():  # the weights and the scores they give land together, or neither does
        store.save_classifier(name, sel.sae, kind, probe.to_json(), params, _nan_to_none(all_metrics), provenance)
        _score_corpus(store, name, probe, select(store, corpus, sae=sel.sae.sae_hash))
    store.record_run("classify.train", {"name": name, "corpus": corpus, **{k: v for k, v in params.items()
                                                                            if not k.endswith("doc_idx")}},
                     provenance)
    return TrainResult(name, held, pr, tops, cv, base, info, curve)


def top_features(store: Store, probe: LinearProbe, sel: Selection, X_train, y_train, *, top: int = 10) -> pl.DataFrame:
    """Largest positive and negative weights (binary) or largest positive per class, with how often
    the feature fires in each class on the training split, its label and its strongest exemplar."""
    rows = []
    present = (X_train > 0).astype(np.float64).tocsc()
    for j, w in enumerate(probe.weights):
        cls = probe.positive if not probe.multiclass else probe.classes[j]
        # the `top` largest positive weights, and (binary) the `top` most negative: each feature once
        positive = sorted(((f, v) for f, v in w.items() if v > 0), key=lambda kv: (-kv[1], kv[0]))[:top]
        negative = [] if probe.multiclass else \
            sorted(((f, v) for f, v in w.items() if v < 0), key=lambda kv: (kv[1], kv[0]))[:top]
        for f, v in positive + negative:
            target = (y_train == j) if probe.multiclass else (y_train == 1)
            col = np.asarray(present[:, f].todense()).ravel()
            rows.append({
                "class": str(cls), "feature": int(f), "weight": float(v), "direction": "+" if v > 0 else "-",
                "freq_in_class": float(col[target].mean()) if target.any() else 0.0,
                "freq_rest": float(col[~target].mean()) if (~target).any() else 0.0,
            })
    frame = pl.DataFrame(rows, schema={"class": pl.Utf8, "feature": pl.Int64, "weight": pl.Float64,
                                       "direction": pl.Utf8, "freq_in_class": pl.Float64, "freq_rest": pl.Float64})
    if frame.is_empty():
        return frame.with_columns(label=pl.lit(None, pl.Utf8), exemplar=pl.lit(None, pl.Utf8))
    feats = frame["feature"].unique().to_list()
    labels = store.labels(sel.sae.sae_key, feats).select(pl.col("feature").cast(pl.Int64), "label")
    ex = store.exemplar_snippets(sel.sae.sae_key, feats, corpus=sel.corpus.name, per_feature=1, width=40)
    ex = ex.select(pl.col("feature").cast(pl.Int64), exemplar="snippet").unique("feature")
    return frame.join(labels, on="feature", how="left").join(ex, on="feature", how="left")
