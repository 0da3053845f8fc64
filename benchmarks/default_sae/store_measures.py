"""Measures of the selection benchmark that go through saeembed's analyses (diff separability, persona
search MAP, syngoalex axis ARI).

Each candidate gets a scratch store (outside the repo). Its corpora are ingested from the cached sets'
docs.jsonl and their encodings are written with the store's own encode calls (begin_encoding /
write_encoded / finish_encoding, plus the random-token probe) from rows pooled by saeembed's pool_max
over the cached token activations: the same rows `saeembed encode` would store, without re-running
MiniLM per candidate. The analyses then run unchanged on that store.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ (search_persona helpers)


def build_store(path: Path, sae, loaded, hook: str, codes: dict, acts: Path, skip: str = "none"):
    """A store holding every set of `codes` (name -> SetCodes) encoded with `sae` (pooled with --skip-tokens skip)."""
    from saeembed.config import EncodeConfig
    from saeembed.documents import ingest
    from saeembed.encode.capture import ActivationCapture
    from saeembed.encode.pipeline import PROBE, RANDOM_PROBE_DOCS
    from saeembed.encode.probe import run_random_probe
    from saeembed.store import Store

    path.parent.mkdir(parents=True, exist_ok=True)
    for p in (path, Path(str(path) + ".wal")):
        p.unlink(missing_ok=True)
    store = Store(path)
    cfg = EncodeConfig(skip_tokens=skip)
    window = loaded.max_window
    sae_info = store.register_sae(sae)
    tmp = Path(tempfile.mkdtemp(prefix="sae_select_"))
    for name, c in codes.items():
        rows = [json.loads(line) for line in open(acts / name / "docs.jsonl", encoding="utf-8")]
        src = tmp / f"{name}.jsonl"
        with open(src, "w", encoding="utf-8") as f:
            for i, r in enumerate(rows):
                f.write(json.dumps({"doc_id": r["prompt"] if "prompt" in r else f"{name}{i}", **r}) + "\n")
        ingest(store, src, corpus=name, id_column="doc_id")
        info = store.corpus(name)
        check = store.documents(name, text=True)
        assert check.height == c.n_docs and check.sort("doc_idx")["text"].to_list() == [r["text"] for r in rows], \
            f"doc order of {name} differs from the cache"
        store.begin_encoding(info, sae_info, loaded.name, hook, cfg.pooling_params(window))
        docs = pl.DataFrame({"doc_idx": np.arange(c.n_docs, dtype=np.int32), "n_tokens": c.n_tokens.astype(np.int32),
                             "n_windows": np.ones(c.n_docs, np.int32)})
        store.write_encoded(info, sae_info, c.pooled, docs)
        store.finish_encoding(info, sae_info, exemplars_per_feature=cfg.exemplars_per_feature)
    with ActivationCapture(loaded, hook) as capture:
        stats = run_random_probe(loaded, capture, sae, cfg, window, n_docs=RANDOM_PROBE_DOCS)
    store.set_probe(sae_info, PROBE, stats, RANDOM_PROBE_DOCS, {"model": loaded.name, "hook": hook})
    return store


def diff_separability(store, pairs: list[str]) -> dict:
    """Per answer pair: top-10 (first ranking) AUROC / all-feature AUROC, as benchmarks/diff/separability.py."""
    from saeembed.analysis.diff import diff_corpora
    from saeembed.config import DiffConfig

    out = {}
    for p in pairs:
        r = diff_corpora(store, f"{p}_a", f"{p}_b", config=DiffConfig(group_column="prompt", top=None, exemplars=1))
        sep = r.summary["separability"]
        first = r.frame["ranking"].unique(maintain_order=True).to_list()[0]
        out[p] = {"ranking": first, "top": sep["top"], "auroc_top": sep["auroc_top"][first], "auroc_all": sep["auroc_all"],
                  "share": sep["auroc_top"][first] / sep["auroc_all"]}
    return out


def persona_map(store, pool_others: int = 1000, n_features: int = 30, seed: int = 0, match: str = "auto") -> dict:
    """Mean AP of `search --mode sae --match MATCH` per property, as benchmarks/search_persona.py (smaller pools).

    auto needs every feature described: with an atlas (today's default) that is its labels; without one,
    exemplar texts of every feature embedded with MiniLM (minutes per candidate on a shared CPU). prf
    needs only the pool's dense embeddings, so it compares candidates on an equal footing."""
    from search_persona import average_precision

    from saeembed.analysis.retrieve import search

    docs = store.documents("persona", text=False)
    rng = np.random.default_rng(seed)
    aps = {}
    for prop in sorted(docs["property"].unique().to_list()):
        mine = docs.filter(pl.col("property") == prop)
        others = docs.filter(pl.col("property") != prop)["doc_idx"].to_numpy()
        pool = np.concatenate([mine["doc_idx"].to_numpy(), rng.choice(others, min(pool_others, len(others)), replace=False)])
        relevant = set(mine.filter(pl.col("matches"))["doc_idx"].to_list())
        got = search(store, "persona", prop.replace("-", " "), top=len(pool), depth=len(pool), doc_idx=pool,
                     n_features=n_features, mode="sae", match=match)
        aps[prop] = average_precision(got["doc_idx"].to_list(), relevant)
    return {"MAP": float(np.mean(list(aps.values()))), "match": match, "properties": len(aps), "pool": int(len(pool)), "per_property": aps}


def axis_ari(store, k: int = 4, seed: int = 0) -> dict:
    """ARI of `saeembed cluster syngoalex --axis topic|style --k 4` with the topic / style labels."""
    from sklearn.metrics import adjusted_rand_score

    from saeembed.analysis.cluster import cluster

    docs = store.documents("syngoalex", text=False).sort("doc_idx")
    out = {}
    for axis in ("topic", "style"):
        res = cluster(store, "syngoalex", axis=axis, k=k, seed=seed, save=False)
        pred = res.assignments.sort("doc_idx")["cluster"].to_numpy()
        out[axis] = float(adjusted_rand_score(docs[axis].to_numpy(), pred))
    return out
