"""How well do a diff's listed features tell its two sides apart?

Cross-validated AUROC of a logistic regression on binary presence of the top-N features of each
ranking, beside the same on all SAE features and on document length alone, so a reader sees whether
the listed features carry the difference or length does. The matrix is the store's CSR
(embedding_matrix), never dense; large sides are sampled (seeded) to at most `max_docs` documents.

Folds: grouped by a metadata column when given (paired sides — the same prompt answered two ways —
must keep both answers in one fold: otherwise each answer's twin, with the opposite label, sits in
the training folds), else stratified. AUROC is the mean over folds (sklearn's cross_val_score with
scoring="roc_auc"); a fold whose test part holds one side only is skipped.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import scipy.sparse as sp

from saeembed.analysis.selection import Selection, embedding_matrix
from saeembed.store import Store


def model():
    """The classifier every AUROC here is computed with."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=1.0, max_iter=1000)


def folds_for(y: np.ndarray, groups: np.ndarray | None, n_folds: int, seed: int):
    """The CV splitter and its split list (None when there are too few documents or groups)."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    k = min(n_folds, int(np.bincount(y, minlength=2).min()))
    if groups is not None:
        k = min(k, len(np.unique(groups)))
    if k < 2:
        return None, []
    cv = StratifiedGroupKFold(k, shuffle=True, random_state=seed) if groups is not None else \
        StratifiedKFold(k, shuffle=True, random_state=seed)
    return cv, list(cv.split(np.zeros(len(y)), y, groups))


def cv_auroc(x, y: np.ndarray, splits: list) -> float | None:
    """Mean held-out AUROC of model() over the splits (folds with one class in the test part skipped)."""
    from sklearn.metrics import roc_auc_score

    scores = []
    for train, test in splits:
        if len(np.unique(y[test])) < 2 or len(np.unique(y[train])) < 2:
            continue
        clf = model().fit(x[train], y[train])
        scores.append(roc_auc_score(y[test], clf.predict_proba(x[test])[:, 1]))
    return float(np.mean(scores)) if scores else None


def _sample(sel: Selection, lengths: np.ndarray, max_docs: int, seed: int):
    """At most max_docs documents of a side (seeded; the same positions for two equal-size sides, so
    paired sides stay paired)."""
    if sel.n_docs <= max_docs:
        return sel, lengths
    pos = np.sort(np.random.default_rng(seed).choice(sel.n_docs, max_docs, replace=False))
    return Selection(sel.corpus, sel.sae, sel.doc_idx[pos], sel.name), lengths[pos]


def _groups(store: Store, sels: list[Selection], column: str) -> np.ndarray:
    """Integer group of each document of the sides (in order); a missing value is its own group."""
    keys = []
    for side, sel in enumerate(sels):
        table = store.doc_table(sel.corpus, sel.sae, columns=[column])
        by_doc = dict(zip(table["doc_idx"].to_list(), table[column].cast(pl.Utf8).to_list()))
        keys.extend(by_doc.get(int(d)) or f"\0{side}:{i}" for i, d in enumerate(sel.doc_idx))
    return np.unique(np.array(keys, dtype=object), return_inverse=True)[1].astype(np.int64)


def separability(store: Store, a: Selection, b: Selection, top: dict[str, list[int]], *,
                 lengths: tuple[np.ndarray, np.ndarray] | None = None, group_column: str | None = None,
                 folds: int = 5, max_docs: int = 20_000, seed: int = 0, with_all: bool = True,
                 with_length: bool = True) -> dict:
    """AUROC of each list in `top` (name -> features), of all features and of length alone.

    lengths: token lengths of a's and b's documents in selection order (needed for the length figure).
    Returns top (N: the longest list but "listed", the union a caller may add), n_listed, auroc_top {name: AUROC}, auroc_all, auroc_length, share_of_all
    {name: auroc_top / auroc_all}, folds, fold_kind, docs_a, docs_b, sampled, note."""
    la, lb = lengths if lengths is not None else (np.zeros(a.n_docs), np.zeros(b.n_docs))
    sa, la = _sample(a, np.asarray(la), max_docs, seed)
    sb, lb = _sample(b, np.asarray(lb), max_docs, seed)
    y = np.concatenate([np.ones(sa.n_docs, dtype=np.int64), np.zeros(sb.n_docs, dtype=np.int64)])
    groups = _groups(store, [sa, sb], group_column) if group_column else None
    _, splits = folds_for(y, groups, folds, seed)
    wanted = sorted({int(f) for fs in top.values() for f in fs})
    x = sp.vstack([embedding_matrix(store, s, features=None if with_all else wanted, binary=True)
                   for s in (sa, sb)]).tocsr()
    out = {
        "top": max((len(fs) for name, fs in top.items() if name != "listed"), default=0),
        "n_listed": len(top["listed"]) if "listed" in top else None,
        "auroc_top": {name: cv_auroc(x[:, list(fs)], y, splits) if len(fs) else None for name, fs in top.items()},
        "auroc_all": cv_auroc(x, y, splits) if with_all else None,
        "auroc_length": (cv_auroc(np.log1p(np.concatenate([la, lb]).astype(np.float64))[:, None], y, splits)
                         if with_length and lengths is not None else None),
        "folds": len(splits),
        "fold_kind": f"grouped by {group_column}" if group_column else "stratified",
        "docs_a": sa.n_docs, "docs_b": sb.n_docs,
        "sampled": sa.n_docs < a.n_docs or sb.n_docs < b.n_docs,
    }
    all_ = out["auroc_all"]
    out["share_of_all"] = {name: (v / all_ if v is not None and all_ else None) for name, v in out["auroc_top"].items()}
    out["note"] = _note(out, a, b, max_docs)
    return out


def _note(s: dict, a: Selection, b: Selection, max_docs: int) -> str:
    if not s["folds"]:
        return "separability not computed: too few documents (or groups) on one side for 2 folds"
    def f(v):
        return "n/a" if v is None else f"{v:.3f}"
    parts = [f"both sections ({s['n_listed']} features) {f(v)}" if name == "listed" else
             f"top-{s['top']} {name.replace('_', '-')} {f(v)}" for name, v in s["auroc_top"].items()]
    text = (f"cross-validated AUROC ({s['folds']} folds, {s['fold_kind']}, logistic regression on feature presence): "
            + ", ".join(parts) + f"; all features {f(s['auroc_all'])}; length alone {f(s['auroc_length'])}")
    if s["sampled"]:
        text += (f" (on a seeded sample of {s['docs_a']} of {a.n_docs} and {s['docs_b']} of {b.n_docs} documents; "
                 f"at most {max_docs} per side)")
    return text
