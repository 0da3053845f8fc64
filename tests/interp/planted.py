"""A store whose features fire on planted words, with spans at those words (known answers by construction).

feature 3: "covid"/"pandemic" (docs with topic=health); feature 5: a year; feature 0: every document
(at its first word); features 8..15: random words (background co-firing, for hard negatives);
feature 7: never fires.
"""

from __future__ import annotations

import random

import polars as pl

from saeembed.documents import Documents
from saeembed.store import Store
from tests.synthetic import register_sae

FILLERS = [
    "the team won the match on sunday", "add two cups of flour and stir well", "rain is expected tomorrow in the north",
    "the museum opened a new wing for modern art", "stock prices fell sharply after the report",
    "she planted tomatoes and basil in the garden", "the train was delayed by twenty minutes",
    "our cat sleeps on the sofa all afternoon", "the orchestra played a quiet symphony",
    "engineers repaired the old bridge over the river", "he bought a red bicycle at the market",
    "the bakery sells fresh bread every morning",
]
COVID = ["the covid pandemic closed many schools", "hospitals filled up during the pandemic",
         "covid cases rose again this winter", "the pandemic changed how people work"]


def _span(text: str, word: str) -> tuple[int, int]:
    i = text.index(word)
    return i, i + len(word)


def planted_store(store: Store, n: int = 160, seed: int = 0):
    rng = random.Random(seed)
    sae = register_sae(store, d_sae=16)
    texts, topics, acts = [], [], []
    for i in range(n):
        parts = rng.sample(FILLERS, 3)
        kind = i % 4
        if kind == 0:
            parts.insert(rng.randrange(4), rng.choice(COVID))
        elif kind == 1:
            parts.insert(rng.randrange(4), f"it was built in {rng.randrange(1900, 2024)}")
        text = ". ".join(parts) + "."
        texts.append(text)
        topics.append("health" if kind == 0 else rng.choice(["sport", "food", "news"]))
        rows = [(0, 0.5 + rng.random(), 0, text.index(" "))]
        if kind == 0:
            word = "covid" if "covid" in text else "pandemic"
            rows.append((3, 1.0 + 4 * rng.random(), *_span(text, word)))
        if kind == 1:
            year = text.split("built in ")[1][:4]
            rows.append((5, 1.0 + 4 * rng.random(), *_span(text, year)))
        words = [w for w in text.replace(".", " ").split() if len(w) > 3]
        for f in rng.sample(range(8, 16), 3):
            rows.append((f, rng.random(), *_span(text, rng.choice(words))))
        acts += [(i, f, v, 1, s, e) for f, v, s, e in rows]
    write_planted(store, sae, "planted", texts, acts, {"topic": topics})
    return sae


def write_planted(store: Store, sae, name: str, texts: list[str], acts: list[tuple], meta: dict | None = None):
    """Store a corpus of `texts` as encoded by `sae` with the given activation rows
    (doc_idx, feature, value, active_tokens, span_start, span_end); every document 20 tokens, one window."""
    n = len(texts)
    meta = meta or {}
    frame = pl.DataFrame({"doc_id": [f"d{i}" for i in range(n)], "text": texts, **meta})
    info = store.add_corpus(name, Documents(frame, "text", "id", list(meta), "synthetic", 0))
    store.begin_encoding(info, sae, "synthetic-model", "layers.1", {})
    store.write_encoded(
        info, sae,
        pl.DataFrame(acts, schema={"doc_idx": pl.Int32, "feature": pl.Int32, "value": pl.Float32,
                                   "active_tokens": pl.Int32, "span_start": pl.Int32, "span_end": pl.Int32},
                     orient="row"),
        pl.DataFrame({"doc_idx": list(range(n)), "n_tokens": [20] * n, "n_windows": [1] * n},
                     schema={"doc_idx": pl.Int32, "n_tokens": pl.Int32, "n_windows": pl.Int32}),
    )
    store.finish_encoding(info, sae)


def bag_of_words_embed(texts):
    """A fast stand-in sentence embedder for tests of the plumbing: hashed word counts, unit length."""
    import numpy as np

    out = np.zeros((len(texts), 256), dtype=np.float32)
    for i, t in enumerate(texts):
        for w in t.lower().replace(",", " ").replace(".", " ").split():
            out[i, hash(w) % 256] += 1.0
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.maximum(norms, 1e-9)
