"""Zero-shot classification: score documents by the SAE features matched to a free-text description,
with no labels, saved as a classifier so it applies to other corpora."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from saeembed import __version__
from saeembed.analysis.classify_apply import _score_corpus
from saeembed.analysis.classify_fit import _labels
from saeembed.analysis.classify_metrics import _nan_to_none, metrics, pr_curve, pr_table
from saeembed.analysis.classify_model import ZeroShotModel
from saeembed.analysis.selection import Selection, embedding_matrix, require_docs, select
from saeembed.errors import InputError
from saeembed.store import Store
from saeembed.store.names import check_name


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

    name = check_name(name, "classifier")
    sel = require_docs(select(store, corpus, where=where, sae=sae))
    matched = match_features(store, sel.sae, query, corpus=corpus, top=top_features, **(match_options or {}))
    matched = matched.filter(pl.col("score") > 0)
    if matched.is_empty():
        raise InputError(f"no feature matches {query!r} in corpus {corpus!r}; rephrase the description")
    feats = [int(f) for f in matched["feature"].to_list()]
    q = store.feature_quantiles(sel.corpus, sel.sae, feats, 0.95)
    scales = {int(f): float(v) for f, v in zip(q["feature"], q["scale"]) if v and v > 0}
    weights = {f: float(m) for f, m in zip(feats, matched["score"].to_list()) if f in scales}
    if not weights:
        raise InputError(f"the features matching {query!r} never fire in corpus {corpus!r}")
    model = ZeroShotModel(query, weights, scales)
    store.save_classifier(name, sel.sae, "zero_shot", model.to_json(),
                          {"query": query, "top_features": top_features, "where": where},
                          {}, {"corpus": sel.corpus.name, "sae_hash": sel.sae.sae_hash, "saeembed": __version__})
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
