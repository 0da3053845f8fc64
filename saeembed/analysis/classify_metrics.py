"""How good a classifier's scores are: AUROC, F1, accuracy, precision-recall tables and curves."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import polars as pl

THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def metrics(y: np.ndarray, proba: np.ndarray, n_classes: int) -> dict:
    """auroc, f1 (positive class for binary, macro for multi-class), macro_f1, accuracy, average precision."""
    from sklearn.metrics import accuracy_score, average_precision_score, f1_score, roc_auc_score

    out: dict = {"n": int(len(y))}
    if n_classes == 2:
        pred = (proba >= 0.5).astype(int)
        both = len(np.unique(y)) == 2
        out["auroc"] = float(roc_auc_score(y, proba)) if both else None
        out["average_precision"] = float(average_precision_score(y, proba)) if both else None
        out["f1"] = float(f1_score(y, pred, zero_division=0))
        out["positive_rate"] = float(y.mean())
    else:
        pred = proba.argmax(axis=1)
        present = np.unique(y)
        try:
            out["auroc"] = float(roc_auc_score(y, proba, multi_class="ovr", average="macro",
                                               labels=np.arange(n_classes)))
        except ValueError:  # a class absent from this split
            out["auroc"] = None
        out["f1"] = float(f1_score(y, pred, average="macro", labels=present, zero_division=0))
    out["macro_f1"] = float(f1_score(y, pred, average="macro", zero_division=0))
    out["accuracy"] = float(accuracy_score(y, pred))
    return out


def pr_table(y: np.ndarray, proba: np.ndarray, thresholds: Sequence[float] = THRESHOLDS) -> pl.DataFrame:
    """Precision, recall, F1 and share flagged at each score threshold (binary)."""
    rows = []
    for t in thresholds:
        pred = proba >= t
        tp = int((pred & (y == 1)).sum())
        fp = int((pred & (y == 0)).sum())
        fn = int((~pred & (y == 1)).sum())
        p = tp / (tp + fp) if tp + fp else float("nan")
        r = tp / (tp + fn) if tp + fn else float("nan")
        f = 2 * p * r / (p + r) if tp else 0.0
        rows.append({"threshold": t, "precision": p, "recall": r, "f1": f, "flagged": float(pred.mean())})
    return pl.DataFrame(rows)


def pr_curve(y: np.ndarray, proba: np.ndarray, *, max_points: int = 200) -> pl.DataFrame:
    """The precision-recall curve at every distinct score threshold (sklearn's precision_recall_curve),
    thinned to at most `max_points` evenly spaced thresholds (the lowest and highest kept), highest
    threshold first: recall rises along the rows and, at equal recall, precision falls. Binary; empty
    when the labels hold a single class."""
    from sklearn.metrics import precision_recall_curve

    schema = {"threshold": pl.Float64, "precision": pl.Float64, "recall": pl.Float64}
    y = np.asarray(y)
    if len(y) == 0 or len(np.unique(y)) < 2:
        return pl.DataFrame(schema=schema)
    precision, recall, thresholds = precision_recall_curve(y, np.asarray(proba, dtype=np.float64))
    # sklearn appends (precision 1, recall 0) with no threshold: keep only the points of real thresholds
    precision, recall = precision[: len(thresholds)], recall[: len(thresholds)]
    keep = np.arange(len(thresholds))
    if len(keep) > max_points:
        keep = np.unique(np.round(np.linspace(0, len(thresholds) - 1, max(2, max_points))).astype(np.int64))
    order = keep[::-1]  # thresholds ascend in sklearn's output
    return pl.DataFrame({"threshold": thresholds[order], "precision": precision[order], "recall": recall[order]},
                        schema=schema)


def _nan_to_none(d):
    """NaN (and ±inf) → None, through dicts, lists and tuples: what json.dumps writes is strict JSON."""
    if isinstance(d, dict):
        return {k: _nan_to_none(v) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [_nan_to_none(v) for v in d]
    if isinstance(d, float) and not math.isfinite(d):
        return None
    return d
