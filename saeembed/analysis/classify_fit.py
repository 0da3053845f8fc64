"""Fitting probes: the labelled rows of a selection, held-out splits and folds, logistic regression with
C chosen by cross-validation, input scaling, and the dense / TF-IDF baselines fitted the same way."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import polars as pl
import scipy.sparse as sp

from saeembed.analysis.classify_model import LinearProbe
from saeembed.analysis.selection import Selection
from saeembed.errors import InputError
from saeembed.store import Store

BASELINES = ("dense", "tfidf")

Progress = Callable[[str], None]


@dataclass
class ProbeConfig:
    """How a probe is trained. Defaults are what `saeembed classify train` uses."""

    penalty: str = "l1"  # l1 or elasticnet
    l1_ratio: float = 0.5  # elasticnet mix (1 = L1)
    Cs: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)  # inverse regularisation strengths tried
    folds: int = 5  # cross-validation folds on the training split
    cv_max_rows: int | None = 50_000  # C is chosen on a seeded sample of at most this many training rows (None: all)
    test_size: float = 0.2  # held-out share
    seed: int = 0
    binary: bool = False  # presence (0/1) instead of max activation as input
    class_weight: str | None = "balanced"
    max_iter: int = 2000

# --- labels and splits -----------------------------------------------------------------------------


def _labels(store: Store, sel: Selection, label_column: str, positive=None):
    """(doc_idx kept, y as class indices, classes, positive) for the labelled documents of a selection."""
    docs = store.documents(sel.corpus, text=False, doc_idx=sel.doc_idx.tolist())
    if label_column not in docs.columns or label_column in ("doc_idx",):
        cols = [c for c in docs.columns if c != "doc_idx"]
        raise InputError(f"corpus {sel.corpus.name!r} has no column {label_column!r}; columns: {', '.join(cols)}")
    docs = docs.filter(pl.col(label_column).is_not_null())
    if docs.height == 0:
        raise InputError(f"column {label_column!r} is empty in {sel.name!r}")
    values = docs[label_column]
    if values.dtype == pl.Float64 or values.dtype == pl.Float32:
        if not (values == values.round(0)).all():
            raise InputError(
                f"column {label_column!r} holds continuous numbers; a classifier needs classes "
                "(bool, integers or strings): threshold it first, e.g. in the file"
            )
        values = values.cast(pl.Int64)
    classes = sorted(values.unique().to_list(), key=lambda v: (str(type(v)), v))
    if len(classes) < 2:
        raise InputError(f"column {label_column!r} has a single class ({classes[0]!r}) in {sel.name!r}; need two or more")
    if len(classes) > 2 and positive is not None:  # one value against the rest
        positive = _coerce(positive, classes)
        if positive not in classes:
            raise InputError(f"--positive {positive!r} is not a value of {label_column!r} (values: {classes})")
        rest = f"not {positive}"
        values = pl.Series([positive if v == positive else rest for v in values.to_list()], dtype=pl.Object)
        classes = [rest, positive]
    if len(classes) > 50:
        raise InputError(f"column {label_column!r} has {len(classes)} distinct values; a classifier needs at most 50 classes")
    if len(classes) == 2:
        if positive is None:
            positive = True if values.dtype == pl.Boolean else 1 if classes == [0, 1] else classes[1]
        else:
            positive = _coerce(positive, classes)
            if positive not in classes:
                raise InputError(f"--positive {positive!r} is not a value of {label_column!r} (values: {classes})")
        classes = [c for c in classes if c != positive] + [positive]  # positive class last: index 1
    lookup = {c: i for i, c in enumerate(classes)}
    y = np.array([lookup[v] for v in values.to_list()], dtype=np.int64)
    return docs["doc_idx"].to_numpy().astype(np.int64), y, classes, positive


def _coerce(value, classes):
    """--positive comes in as text; match it to the column's type."""
    if not isinstance(value, str):
        return value
    for c in classes:
        if str(c).lower() == value.lower():
            return c
    return value


def _groups(store: Store, sel: Selection, doc_idx: np.ndarray, column: str | None) -> np.ndarray | None:
    if not column:
        return None
    docs = store.documents(sel.corpus, text=False, doc_idx=doc_idx.tolist())
    if column not in docs.columns:
        raise InputError(f"corpus {sel.corpus.name!r} has no column {column!r} to group by")
    return docs[column].cast(pl.Utf8).fill_null("").to_numpy()


def split_indices(y: np.ndarray, *, test_size: float, seed: int, groups: np.ndarray | None = None):
    """Held-out split: stratified by class, or by group (all rows of a group on one side)."""
    from sklearn.model_selection import GroupShuffleSplit, train_test_split

    idx = np.arange(len(y))
    if not 0 < test_size < 1:
        raise InputError("--test-size must be between 0 and 1")
    if groups is not None:
        tr, te = next(GroupShuffleSplit(n_splits=1, test_size=test_size, random_state=seed).split(idx, y, groups))
        return np.sort(tr), np.sort(te)
    counts = np.bincount(y)
    stratify = y if counts.min() >= 2 else None
    tr, te = train_test_split(idx, test_size=test_size, random_state=seed, stratify=stratify)
    return np.sort(tr), np.sort(te)


def _folds(y: np.ndarray, n_folds: int, seed: int, groups: np.ndarray | None):
    from sklearn.model_selection import GroupKFold, StratifiedKFold

    if groups is not None:
        k = min(n_folds, len(np.unique(groups)))
        return list(GroupKFold(n_splits=k).split(np.zeros(len(y)), y, groups))
    k = max(2, min(n_folds, int(np.bincount(y).min())))
    return list(StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))


# --- fitting ---------------------------------------------------------------------------------------


def _logreg(C: float, cfg: ProbeConfig, multiclass: bool, *, l1: bool):
    from sklearn.linear_model import LogisticRegression

    if not l1:
        return LogisticRegression(C=C, l1_ratio=0.0, solver="lbfgs", max_iter=cfg.max_iter,
                                  class_weight=cfg.class_weight)
    ratio = 1.0 if cfg.penalty == "l1" else cfg.l1_ratio
    solver = "liblinear" if (ratio == 1.0 and not multiclass) else "saga"
    return LogisticRegression(C=C, l1_ratio=ratio, solver=solver, max_iter=cfg.max_iter,
                              class_weight=cfg.class_weight, random_state=cfg.seed, tol=1e-4)


def _cv_score(y: np.ndarray, proba: np.ndarray) -> float:
    """Selection criterion: AUROC (binary) or negative log-loss (multi-class)."""
    from sklearn.metrics import log_loss, roc_auc_score

    if proba.ndim == 1:
        return roc_auc_score(y, proba) if len(np.unique(y)) > 1 else float("nan")
    return -log_loss(y, proba, labels=np.arange(proba.shape[1]))


def fit_cv(X, y: np.ndarray, cfg: ProbeConfig, *, groups=None, l1: bool = True, Cs: Sequence[float] | None = None,
           progress: Progress | None = None):
    """Pick C by cross-validation on (X, y), refit on all of it. Returns (model, C, cv table)."""
    from sklearn.exceptions import ConvergenceWarning

    multiclass = y.max() > 1
    # Choosing C needs folds x Cs fits; on a large corpus a sample picks the same C at a fraction of the
    # cost (35 fits on 800 k rows took over 15 minutes). The final model is fitted on every row.
    sample = _cv_sample(y, groups, cfg.cv_max_rows, cfg.seed)
    Xc, yc, gc = (X, y, groups) if sample is None else (X[sample], y[sample], None if groups is None else groups[sample])
    folds = _folds(yc, cfg.folds, cfg.seed, gc)
    rows = []
    for C in Cs or cfg.Cs:
        scores = []
        for tr, va in folds:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                m = _logreg(C, cfg, multiclass, l1=l1).fit(Xc[tr], yc[tr])
            p = m.predict_proba(Xc[va])
            scores.append(_cv_score(yc[va], p[:, 1] if not multiclass else p))
        rows.append({"C": C, "cv_score": float(np.nanmean(scores)), "cv_std": float(np.nanstd(scores)),
                     "cv_rows": len(yc)})
        if progress:
            progress(f"C={C:g}: cv {'AUROC' if not multiclass else '-logloss'} {rows[-1]['cv_score']:.4f}")
    best = max(rows, key=lambda r: (np.nan_to_num(r["cv_score"], nan=-np.inf), -r["C"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = _logreg(best["C"], cfg, multiclass, l1=l1).fit(X, y)
    return model, best["C"], pl.DataFrame(rows)


def _cv_sample(y: np.ndarray, groups, max_rows: int | None, seed: int) -> np.ndarray | None:
    """Sorted row indices of a seeded sample of at most max_rows rows for choosing C (None: use all):
    stratified by class, or whole groups when rows are grouped (paired rows stay together)."""
    if max_rows is None or len(y) <= max_rows:
        return None
    rng = np.random.default_rng(seed)
    if groups is None:
        picked = []
        for cls in np.unique(y):  # the same share of every class, at least one row each
            rows = np.flatnonzero(y == cls)
            picked.append(rng.choice(rows, size=max(1, round(len(rows) * max_rows / len(y))), replace=False))
        return np.sort(np.concatenate(picked))
    _, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    order = rng.permutation(len(counts))
    keep = order[: int(np.searchsorted(np.cumsum(counts[order]), max_rows, side="right")) or 1]
    return np.flatnonzero(np.isin(inverse, keep))


def _to_probe(model, scales: np.ndarray, classes: list, positive, binary_input: bool) -> LinearProbe:
    coef = np.atleast_2d(model.coef_)
    weights = []
    for row in coef:
        nz = np.flatnonzero(row)
        weights.append({int(f): float(row[f]) for f in nz})
    used = {f for w in weights for f in w}
    return LinearProbe(
        classes=list(classes),
        weights=weights,
        intercepts=[float(b) for b in np.atleast_1d(model.intercept_)],
        scales={f: float(scales[f]) for f in sorted(used)},
        binary_input=binary_input,
        positive=positive if len(classes) == 2 else None,
    )


def _maxabs(X: sp.csr_matrix) -> np.ndarray:
    scale = np.asarray(abs(X).max(axis=0).todense()).ravel().astype(np.float64)
    scale[scale == 0] = 1.0
    return scale


def _scaled(X: sp.csr_matrix, scale: np.ndarray) -> sp.csr_matrix:
    return sp.csr_matrix(X.astype(np.float64) @ sp.diags(1.0 / scale))

# --- baselines -------------------------------------------------------------------------------------


class _Baseline:
    """Dense (sentence embedding) or TF-IDF logistic regression, L2, C by the same cross-validation."""

    def __init__(self, kind: str, cfg: ProbeConfig, store: Store, model: str | None = None):
        if kind not in BASELINES:
            raise InputError(f"unknown baseline {kind!r}; use {' or '.join(BASELINES)}")
        self.kind, self.cfg, self.store, self.dense_model = kind, cfg, store, model
        self.vectorizer = None
        self.model = None
        self.C = None

    def features(self, sel: Selection, doc_idx: np.ndarray, *, fit: bool = False):
        if self.kind == "dense":
            from saeembed.encode.dense import corpus_embeddings

            return corpus_embeddings(self.store, sel.corpus, model=self.dense_model)[doc_idx]
        texts = self.store.documents(sel.corpus, metadata=False, doc_idx=doc_idx.tolist())["text"].to_list()
        if fit:
            from sklearn.feature_extraction.text import TfidfVectorizer

            self.vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, max_features=200_000,
                                              sublinear_tf=True)
            return self.vectorizer.fit_transform(texts)
        return self.vectorizer.transform(texts)

    def fit(self, sel: Selection, doc_idx: np.ndarray, y: np.ndarray, groups=None) -> "_Baseline":
        X = self.features(sel, doc_idx, fit=True)
        Cs = (0.1, 1.0, 10.0, 100.0) if self.kind == "dense" else (1.0, 10.0, 100.0)
        self.model, self.C, _ = fit_cv(X, y, self.cfg, groups=groups, l1=False, Cs=Cs)
        return self

    def predict(self, sel: Selection, doc_idx: np.ndarray) -> np.ndarray:
        p = self.model.predict_proba(self.features(sel, doc_idx))
        return p[:, 1] if p.shape[1] == 2 else p
