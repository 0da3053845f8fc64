"""The features listing (`saeembed features`, the features report): the top features of a corpus (or of
every corpus encoded with the SAE) with labels and an exemplar, generic features left out as diff leaves
them out (saeembed.stats.generic_rule: firing on nearly every document, or on random-token texts)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from saeembed.config import FeaturesConfig
from saeembed.analysis.local_tokens import corpus_hints
from saeembed.encode.probe import random_share
from saeembed.stats import generic_rule
from saeembed.store import SAEInfo, Store


@dataclass
class FeatureList:
    frame: pl.DataFrame  # rank, feature, docs, freq, mean_value, max_value, label, here, label_source, score,
    #                      weak, top_exemplar, generic, generic_reason (here: saeembed.analysis.local_tokens)
    sae: SAEInfo
    summary: dict = field(default_factory=dict)  # n_docs, generic_excluded, random_probe, keep_generic


def list_features(store: Store, corpus: str | None = None, *, sae: str | None = None,
                  config: FeaturesConfig | None = None) -> FeatureList:
    """The first config.top features by config.order_by; generic ones left out unless keep_generic (then
    kept and flagged in `generic` / `generic_reason`). summary["generic_excluded"] says how many were left out."""
    cfg = config or FeaturesConfig()
    info, freq, n_docs = store.feature_doc_frequencies(corpus, sae=sae)
    feats = freq["feature"].to_numpy().astype(np.int64)
    share = random_share(store, info, feats) if len(feats) else None
    generic, reasons = generic_rule(freq["freq"].to_numpy(), share, cfg.generic_freq, cfg.random_freq)
    flagged = dict(zip(feats[generic].tolist(), reasons[generic].tolist()))
    frame = store.feature_summary(corpus, sae=sae, top=cfg.top, order_by=cfg.order_by,
                                  exclude=None if cfg.keep_generic else list(flagged))
    hints = corpus_hints(store, info.sae_key, corpus, dict(zip(frame["feature"].to_list(), frame["label"].to_list())))
    frame = frame.insert_column(frame.columns.index("label") + 1,
                                pl.Series("here", [hints.get(f) for f in frame["feature"].to_list()], pl.Utf8))
    frame = frame.with_columns(
        generic=pl.col("feature").is_in(list(flagged)),
        generic_reason=pl.col("feature").replace_strict(flagged, default="", return_dtype=pl.Utf8),
    )
    summary = {"n_docs": n_docs, "keep_generic": cfg.keep_generic,
               "generic_excluded": 0 if cfg.keep_generic else len(flagged), "generic_features": len(flagged),
               "random_probe": "used" if share is not None else "not available for this SAE"}
    return FeatureList(frame, info, summary)
