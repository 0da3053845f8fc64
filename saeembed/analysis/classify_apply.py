"""Using a saved classifier: score the documents of an encoded corpus (stored as filter columns) and
evaluate it on another labelled corpus, beside baselines refitted on its own training rows."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import polars as pl

from saeembed.analysis.classify_fit import ProbeConfig, _Baseline, _labels
from saeembed.analysis.classify_metrics import _nan_to_none, metrics, pr_curve, pr_table
from saeembed.analysis.classify_model import LinearProbe, model_from_json
from saeembed.analysis.selection import Selection, embedding_matrix, require_docs, select
from saeembed.errors import InputError, StoreError
from saeembed.store import Store


def _score_names(name: str, probe: LinearProbe) -> list[str]:
    return [name] if not probe.multiclass else [f"{name}.{c}" for c in probe.classes]


def _score_corpus(store: Store, name: str, probe: LinearProbe, sel: Selection) -> pl.DataFrame:
    X = embedding_matrix(store, sel, features=probe.features or None)
    p = probe.predict_proba(X)
    names = _score_names(name, probe)
    cols = {names[0]: p} if not probe.multiclass else {n: p[:, j] for j, n in enumerate(names)}
    store.write_doc_scores(sel.corpus, cols, sel.doc_idx)
    docs = store.documents(sel.corpus, text=False, metadata=False, doc_idx=sel.doc_idx.tolist())
    out = docs.with_columns([pl.Series(n, v) for n, v in cols.items()])
    if probe.multiclass:
        out = out.with_columns(predicted=pl.Series([str(probe.classes[i]) for i in p.argmax(axis=1)]))
    return out


def _classifier_selection(store: Store, name: str, corpus: str, where: str | None):
    clf = store.load_classifier(name)
    hashes = store.encoded_sae_hashes(store.corpus(corpus))
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
