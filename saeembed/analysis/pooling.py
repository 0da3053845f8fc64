"""Re-pooling: which value a (document, feature) carries in the analyses.

Stored document rows are max-pooled over the document's content tokens. With token rows (encode
--keep-tokens) the analyses can read other poolings instead, without re-encoding:

- max: the stored value (the default).
- mean: the sum of the feature's token values divided by the document's content tokens, zeros
  included (a feature firing strongly on one token of a long document has a small mean).
- sum: the sum of its token values.
- count: the number of content tokens where it fires (= the stored active_tokens).
- binary: 1.0 where it fires.

mean and sum need token rows; count and binary come from the document rows. The pooling is set once per
store connection (`use_pool`) and every analysis on that connection reads it.
"""

from __future__ import annotations

import polars as pl

from saeembed.config import POOLS
from saeembed.errors import InputError
from saeembed.store import Store

RULES = {"max": "max over content tokens (as stored)",
         "mean": "mean over the document's content tokens, zeros included",
         "sum": "sum over content tokens", "count": "content tokens where the feature fires",
         "binary": "1 where the feature fires, else 0"}


def use_pool(store: Store, corpora: list[str], pool: str = "max", *, sae: str | None = None) -> str | None:
    """From now on, analyses on `store` read the documents of these corpora pooled by `pool`. Returns a
    line to show the user (None for max). InputError naming `encode --keep-tokens` when mean or sum is
    asked of a corpus without token rows."""
    if pool not in POOLS:
        raise InputError(f"unknown pooling {pool!r}; use {', '.join(POOLS)}")
    if pool == "max":
        return None
    encodings = []
    for name in dict.fromkeys(corpora):
        info = store.corpus(name)
        encodings.append((info, store.encoded_sae(info, sae)))
    store.set_pool(pool, encodings)
    return f"values pooled by {pool}: {RULES[pool]}"


def pooled_rows(store: Store, corpus: str, pool: str = "max", *, sae: str | None = None,
                features: list[int] | None = None) -> pl.DataFrame:
    """doc_idx, feature, value of a corpus under `pool` (rows where the feature fires), by doc_idx, feature."""
    info = store.corpus(corpus)
    s = store.encoded_sae(info, sae)
    use_pool(store, [corpus], pool, sae=sae)
    rows = store.activation_rows(info, s, features)
    return pl.DataFrame({"doc_idx": rows["doc_idx"], "feature": rows["feature"],
                         "value": rows["value"]}).sort(["doc_idx", "feature"])
