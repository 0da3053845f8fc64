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
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np
import polars as pl
import scipy.sparse as sp

from saeembed.analysis.scores import check_name, load_classifier, save_classifier, write_scores
from saeembed.analysis.selection import Selection, embedding_matrix, require_docs, select
from saeembed.errors import InputError, StoreError
from saeembed.store import Store

BASELINES = ("dense", "tfidf")
THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)

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


# --- the probe as data ------------------------------------------------------------------------------


@dataclass
class LinearProbe:
    """A linear model over SAE features, stored as JSON.

    binary: score = sigmoid(b + sum_f w_f * x_f / s_f), x_f the feature's max activation (or 1 if
    binary input), s_f its training scale. multi-class: softmax over one such sum per class."""

    classes: list
    weights: list[dict[int, float]]  # one dict per logit (1 for binary, n_classes otherwise)
    intercepts: list[float]
    scales: dict[int, float]
    binary_input: bool = False
    positive: object = None  # binary: the class whose probability is the score

    @property
    def multiclass(self) -> bool:
        return len(self.weights) > 1

    @property
    def features(self) -> list[int]:
        return sorted({f for w in self.weights for f in w})

    def to_json(self) -> dict:
        return {
            "type": "linear_probe",
            "classes": self.classes,
            "positive": self.positive,
            "weights": [{str(f): v for f, v in w.items()} for w in self.weights],
            "intercepts": self.intercepts,
            "scales": {str(f): v for f, v in self.scales.items()},
            "binary_input": self.binary_input,
        }

    @classmethod
    def from_json(cls, d: dict) -> "LinearProbe":
        return cls(
            classes=list(d["classes"]),
            weights=[{int(f): float(v) for f, v in w.items()} for w in d["weights"]],
            intercepts=[float(b) for b in d["intercepts"]],
            scales={int(f): float(v) for f, v in d["scales"].items()},
            binary_input=bool(d.get("binary_input", False)),
            positive=d.get("positive"),
        )

    def logits(self, X: sp.csr_matrix) -> np.ndarray:
        """[n, n_logits] from a CSR over all SAE features (only this probe's columns are read)."""
        X = sp.csr_matrix(X)
        if self.binary_input:
            X = X.copy()
            X.data = np.ones_like(X.data)
        W = np.zeros((X.shape[1], len(self.weights)), dtype=np.float64)
        for j, w in enumerate(self.weights):
            for f, v in w.items():
                if f < X.shape[1]:
                    W[f, j] = v / self.scales.get(f, 1.0)
        return np.asarray(X.astype(np.float64) @ W) + np.asarray(self.intercepts)[None, :]

    def predict_proba(self, X: sp.csr_matrix) -> np.ndarray:
        """binary: [n] P(positive); multi-class: [n, n_classes] in `classes` order."""
        z = self.logits(X)
        if not self.multiclass:
            return _sigmoid(z[:, 0])
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)


@dataclass
class ZeroShotModel:
    """Scores by features matched to a description, no labels: score = sum_f m_f * min(1, x_f / s_f) / sum_f m_f,
    m_f the feature's match score, s_f its 95th-percentile activation in the corpus it was built on. In [0, 1]."""

    query: str
    weights: dict[int, float]
    scales: dict[int, float]
    classes: tuple = (False, True)
    positive: object = True
    multiclass: bool = False

    @property
    def features(self) -> list[int]:
        return sorted(self.weights)

    def to_json(self) -> dict:
        return {"type": "zero_shot", "query": self.query, "weights": {str(f): v for f, v in self.weights.items()},
                "scales": {str(f): v for f, v in self.scales.items()}}

    @classmethod
    def from_json(cls, d: dict) -> "ZeroShotModel":
        return cls(d["query"], {int(f): float(v) for f, v in d["weights"].items()},
                   {int(f): float(v) for f, v in d["scales"].items()})

    def predict_proba(self, X: sp.csr_matrix) -> np.ndarray:
        X = sp.csc_matrix(X)
        total = sum(self.weights.values()) or 1.0
        out = np.zeros(X.shape[0])
        for f, m in self.weights.items():
            if f < X.shape[1]:
                col = np.asarray(X[:, f].todense()).ravel().astype(np.float64)
                out += m * np.minimum(1.0, col / self.scales.get(f, 1.0))
        return out / total


def model_from_json(d: dict):
    return ZeroShotModel.from_json(d) if d.get("type") == "zero_shot" else LinearProbe.from_json(d)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # stable for large |z|


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


# --- metrics ---------------------------------------------------------------------------------------


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


# --- train / apply / evaluate ----------------------------------------------------------------------


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
    name = check_name(name)
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
                  "saeembed": _version()}
    all_metrics = {**held, "C": C, "cv": cv.to_dicts(), "pr_table": pr.to_dicts(), "pr_curve": curve.to_dicts(),
                   "baselines": base}
    save_classifier(store, name, sel.sae, kind, probe.to_json(), params, _nan_to_none(all_metrics), provenance)
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


def _score_names(name: str, probe: LinearProbe) -> list[str]:
    return [name] if not probe.multiclass else [f"{name}.{c}" for c in probe.classes]


def _score_corpus(store: Store, name: str, probe: LinearProbe, sel: Selection) -> pl.DataFrame:
    X = embedding_matrix(store, sel, features=probe.features or None)
    p = probe.predict_proba(X)
    names = _score_names(name, probe)
    cols = {names[0]: p} if not probe.multiclass else {n: p[:, j] for j, n in enumerate(names)}
    write_scores(store, sel.corpus, cols, sel.doc_idx)
    docs = store.documents(sel.corpus, text=False, metadata=False, doc_idx=sel.doc_idx.tolist())
    out = docs.with_columns([pl.Series(n, v) for n, v in cols.items()])
    if probe.multiclass:
        out = out.with_columns(predicted=pl.Series([str(probe.classes[i]) for i in p.argmax(axis=1)]))
    return out


def _classifier_selection(store: Store, name: str, corpus: str, where: str | None):
    clf = load_classifier(store, name)
    info = store.corpus(corpus)
    hashes = [r[0] for r in store.con.execute(
        "SELECT s.sae_hash FROM encodings e JOIN saes s USING (sae_key) WHERE e.corpus_id = ?", [info.corpus_id]
    ).fetchall()]
    if clf.sae.sae_hash not in hashes:
        other = f"it is encoded with SAE {', '.join(hashes)}" if hashes else "it is not encoded"
        raise StoreError(
            f"classifier {name!r} was trained on SAE {clf.sae.sae_hash} ({clf.sae.model} {clf.sae.hook}) but corpus "
            f"{corpus!r} {other}; encode it with that SAE (saeembed encode {corpus} --sae ...) to apply the classifier"
        )
    sel = require_docs(select(store, corpus, where=where, sae=clf.sae.sae_hash))
    return clf, model_from_json(clf.model), sel


def apply_classifier(store: Store, name: str, corpus: str, *, where: str | None = None) -> pl.DataFrame:
    """Score every (selected) document of an encoded corpus, store the scores, return
    doc_idx, doc_id and the score column(s) (plus `predicted` for multi-class)."""
    clf, probe, sel = _classifier_selection(store, name, corpus, where)
    out = _score_corpus(store, name, probe, sel)
    store.record_run("classify.apply", {"name": name, "corpus": corpus, "where": where},
                     {"sae_hash": clf.sae.sae_hash, "docs": sel.n_docs})
    return out


def evaluate_classifier(
    store: Store,
    name: str,
    corpus: str,
    label_column: str,
    *,
    where: str | None = None,
    baselines: Sequence[str] = (),
) -> dict:
    """Transfer evaluation on another labelled corpus: metrics of the saved probe and, per baseline,
    of that baseline trained on the classifier's own training rows and applied here."""
    clf, probe, sel = _classifier_selection(store, name, corpus, where)
    doc_idx, y, classes, _ = _labels(store, sel, label_column)
    # Map this corpus's classes onto the classifier's by value (true/1, strings case-insensitively).
    known = {_norm(c): i for i, c in enumerate(probe.classes)}
    mapped = np.array([known.get(_norm(classes[v]), -1) for v in y])
    if (mapped < 0).any():
        missing = sorted({str(classes[v]) for v in y[mapped < 0]})
        raise InputError(f"labels {missing} of {label_column!r} are not classes of classifier {name!r} "
                         f"({probe.classes})")
    y = mapped
    sub = Selection(sel.corpus, sel.sae, doc_idx, sel.name)
    X = embedding_matrix(store, sub, features=probe.features or None)
    p = probe.predict_proba(X)
    out = metrics(y, p, len(probe.classes))
    if len(probe.classes) == 2:
        out["pr_table"] = pr_table(y, p).to_dicts()
        out["pr_curve"] = pr_curve(y, p).to_dicts()
    base = {}
    if baselines:
        tsel, t_idx, t_y = _training_rows(store, clf, probe)
        cfg = ProbeConfig(**{k: (tuple(v) if k == "Cs" else v) for k, v in clf.params["config"].items()})
        for b in baselines:
            bl = _Baseline(b, cfg, store).fit(tsel, t_idx, t_y)
            base[b] = metrics(y, bl.predict(sub, doc_idx), len(probe.classes)) | {"C": bl.C}
    if base:
        first = next(iter(base))
        out["baseline"] = {"kind": first, **base[first]}
        out["baselines"] = base
    if clf.provenance.get("corpus") == corpus and "train_doc_idx" in clf.params:
        # evaluating on the training corpus: say how many of these rows the model was fitted on
        out["rows_seen_in_training"] = int(np.isin(doc_idx, clf.params["train_doc_idx"]).sum())
    out.update({"name": name, "corpus": corpus, "trained_on": clf.provenance.get("corpus"),
                "classes": probe.classes, "sae": clf.sae.sae_hash})
    out = _nan_to_none(out)
    store.record_run("classify.eval", {"name": name, "corpus": corpus, "label_column": label_column,
                                       "baselines": list(baselines)}, {"metrics": out})
    return out


def _training_rows(store: Store, clf, probe: LinearProbe):
    """The classifier's own training split (saved doc_idx), with labels mapped to its classes."""
    corpus = clf.provenance.get("corpus")
    if not store.has_corpus(corpus):
        raise StoreError(f"classifier {clf.name!r} was trained on corpus {corpus!r}, which is no longer in the store; "
                         "baselines need its training rows")
    sel = select(store, corpus, sae=clf.sae.sae_hash)
    t_idx = np.asarray(clf.params["train_doc_idx"], dtype=np.int64)
    docs = store.documents(sel.corpus, text=False, doc_idx=t_idx.tolist())
    col = clf.params["label_column"]
    lookup = {_norm(c): i for i, c in enumerate(probe.classes)}
    y = np.array([lookup.get(_norm(v), -1) for v in docs[col].to_list()])
    keep = y >= 0
    return Selection(sel.corpus, sel.sae, docs["doc_idx"].to_numpy()[keep].astype(np.int64), sel.name), \
        docs["doc_idx"].to_numpy()[keep].astype(np.int64), y[keep]


def _norm(value) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip().lower()


def _version() -> str:
    from saeembed import __version__

    return __version__


# --- zero-shot -------------------------------------------------------------------------------------


@dataclass
class ZeroShotResult:
    name: str
    query: str
    features: pl.DataFrame  # matched features: feature, score, label, evidence, scale
    scores: pl.DataFrame  # doc_idx, doc_id, <name>, sorted best first
    metrics: dict | None = None  # when a label column was given

    def to_dict(self, top_docs: int = 20) -> dict:
        out = {"name": self.name, "query": self.query, "features": self.features.to_dicts(),
               "top_documents": self.scores.head(top_docs).to_dicts()}
        if self.metrics:
            out.update(self.metrics)
        return _nan_to_none(out)


def zero_shot(
    store: Store,
    query: str,
    corpus: str,
    *,
    name: str = "zeroshot",
    top_features: int = 10,
    where: str | None = None,
    sae: str | None = None,
    label_column: str | None = None,
    positive=None,
    match_options: dict | None = None,
) -> ZeroShotResult:
    """Score documents by the SAE features matched to a free-text description (no labels needed).

    The features come from saeembed.interp.match.match_features (labels, exemplars, or pseudo-
    relevance feedback on the corpus); the result is saved as a classifier of kind `zero_shot` under
    `name` (so `apply` works on other corpora) and its scores are stored. With `label_column`, also
    reports auroc / f1 (threshold 0.5) against those labels."""
    from saeembed.interp.match import match_features

    name = check_name(name)
    sel = require_docs(select(store, corpus, where=where, sae=sae))
    matched = match_features(store, sel.sae, query, corpus=corpus, top=top_features, **(match_options or {}))
    matched = matched.filter(pl.col("score") > 0)
    if matched.is_empty():
        raise InputError(f"no feature matches {query!r} in corpus {corpus!r}; rephrase the description")
    feats = [int(f) for f in matched["feature"].to_list()]
    q = store.query(
        "SELECT feature, quantile_cont(value, 0.95) AS scale FROM activations "
        "WHERE corpus_id = ? AND sae_key = ? AND feature IN (SELECT unnest(?)) GROUP BY feature",
        [sel.corpus.corpus_id, sel.sae.sae_key, feats],
    )
    scales = {int(f): float(v) for f, v in zip(q["feature"], q["scale"]) if v and v > 0}
    weights = {f: float(m) for f, m in zip(feats, matched["score"].to_list()) if f in scales}
    if not weights:
        raise InputError(f"the features matching {query!r} never fire in corpus {corpus!r}")
    model = ZeroShotModel(query, weights, scales)
    save_classifier(store, name, sel.sae, "zero_shot", model.to_json(),
                    {"query": query, "top_features": top_features, "where": where},
                    {}, {"corpus": sel.corpus.name, "sae_hash": sel.sae.sae_hash, "saeembed": _version()})
    scores = _score_corpus(store, name, model, sel).sort(name, descending=True)
    result_metrics = None
    if label_column:
        doc_idx, y, classes, _ = _labels(store, sel, label_column, positive)
        if len(classes) != 2:
            raise InputError("zero-shot evaluation needs a two-class label column")
        p = model.predict_proba(embedding_matrix(store, Selection(sel.corpus, sel.sae, doc_idx, sel.name),
                                                 features=model.features))
        result_metrics = metrics(y, p, 2) | {"pr_table": pr_table(y, p).to_dicts(),
                                             "pr_curve": pr_curve(y, p).to_dicts()}
    frame = matched.filter(pl.col("feature").is_in(list(weights))).with_columns(
        scale=pl.col("feature").replace_strict(scales, default=None, return_dtype=pl.Float64))
    keep = [c for c in ("feature", "score", "label", "evidence", "scale") if c in frame.columns]
    store.record_run("classify.zero_shot", {"name": name, "query": query, "corpus": corpus}, {"features": feats})
    return ZeroShotResult(name, query, frame.select(keep), scores, result_metrics)
