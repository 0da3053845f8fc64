"""The random-token probe: which SAE features fire on text made of random tokens.

A feature that fires on most random-token texts responds to position, length or the mere presence
of tokens, not to content; diffs and correlations flag it as generic. Computed once per SAE (at its
first encode) and kept in the store.
"""

from __future__ import annotations

import numpy as np
import polars as pl

PROBE = "random"


def random_token_texts(tokenizer, *, n_docs: int = 128, n_tokens: int = 32, seed: int = 0) -> list[str]:
    """Texts decoded from uniformly random non-special token ids."""
    rng = np.random.default_rng(seed)
    special = set(tokenizer.all_special_ids)
    vocab = np.array([i for i in range(len(tokenizer)) if i not in special])
    texts = []
    for _ in range(n_docs):
        ids = rng.choice(vocab, size=n_tokens).tolist()
        text = tokenizer.decode(ids, skip_special_tokens=True).strip()
        texts.append(text or "x")
    return texts


def run_random_probe(loaded, capture, sae, cfg, window: int, *, n_docs: int = 128) -> pl.DataFrame:
    """(feature, value = share of random-token texts where it fires), for features that fire at all."""
    from saeembed.encode.chunk import encode_chunk

    texts = random_token_texts(loaded.tokenizer, n_docs=n_docs, n_tokens=min(32, max(window - 2, 4)))
    acts, _ = encode_chunk(loaded, capture, sae, texts, cfg, window)
    return (
        acts.group_by("feature")
        .agg(value=pl.len() / len(texts))
        .sort("feature")
    )


def random_share(store, sae, features) -> np.ndarray | None:
    """Per listed feature, the share of the SAE's random-token texts on which it fires (0 where it never
    does), the input of saeembed.stats.generic_rule; None when the probe was never run for this SAE."""
    probe = store.probe(sae, PROBE)
    if probe is None:
        return None
    f = probe["feature"].to_numpy().astype(np.int64)
    features = np.asarray(features, dtype=np.int64)
    share = np.zeros(int(max(f.max(initial=-1), features.max(initial=-1))) + 1)
    share[f] = probe["value"].to_numpy()
    return share[features]
