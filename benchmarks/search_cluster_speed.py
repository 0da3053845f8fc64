"""Speed at scale on synthetic SAE embeddings (no model needed to build them).

    python benchmarks/search_cluster_speed.py [--docs 1000000] [--cluster-docs 100000]

Builds (once, in the scratch folder) a corpus of --docs documents with 32 active features each out of
the default SAE's 4096 (Zipf-like feature popularity, like real TopK codes), and a --cluster-docs
corpus with 8 planted groups. Then times:
  search   `search(..., features=[10 features])` : first call and the median of the next 5 (other features)
  where    the same with --where on a metadata column
  query    `search(..., "a text query")` with the describe matcher: first call (embeds 4096 feature
           descriptions once, cached in the store) and the median of the next 3 queries
  cluster  100k documents on 50 features: HDBSCAN (defaults) and k-means k=8
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SCRATCH, machine  # noqa: E402

K = 32


def build(store, name: str, n: int, d_sae: int, seed: int, groups: int = 0):
    from saeembed.documents import Documents

    if store.has_corpus(name):
        return store.corpus(name)
    rng = np.random.default_rng(seed)
    ids = [f"d{i}" for i in range(n)]
    frame = pl.DataFrame({"doc_id": ids, "text": [f"synthetic document {i}" for i in range(n)],
                          "bucket": (np.arange(n) % 10).astype(np.int64)})
    info = store.add_corpus(name, Documents(frame, "text", "doc_id", ["bucket"], "synthetic", 0))
    sae = store.sae_info(1)
    store.begin_encoding(info, sae, "synthetic", "layers.4", {})
    pop = 1.0 / np.arange(1, d_sae + 1) ** 0.8
    pop /= pop.sum()
    perm = rng.permutation(d_sae)
    step = 100_000
    for start in range(0, n, step):
        m = min(step, n - start)
        feats = perm[np.minimum(rng.choice(d_sae, size=(m, K * 2), p=pop), d_sae - 1)]
        if groups:  # planted: group g always fires 6 of its own features
            g = (np.arange(start, start + m) % groups)
            feats[:, :6] = 4000 + (g[:, None] * 6 + np.arange(6)) % 96
        rows_f = [r[np.sort(np.unique(r, return_index=True)[1])][:K] for r in feats]  # keep order: planted first
        lens = np.array([len(r) for r in rows_f])
        doc = np.repeat(np.arange(start, start + m, dtype=np.int32), lens)
        f = np.concatenate(rows_f).astype(np.int32)
        acts = pl.DataFrame({"doc_idx": doc, "feature": f, "value": rng.gamma(2.0, 1.0, len(f)).astype(np.float32),
                             "active_tokens": np.ones(len(f), np.int32), "span_start": np.zeros(len(f), np.int32),
                             "span_end": np.full(len(f), 9, np.int32)})
        docs = pl.DataFrame({"doc_idx": np.arange(start, start + m, dtype=np.int32),
                             "n_tokens": np.full(m, 40, np.int32), "n_windows": np.ones(m, np.int32)})
        store.write_encoded(info, sae, acts, docs)
        print(f"  {name}: {start + m:,} docs", flush=True)
    store.finish_encoding(info, sae)
    return store.corpus(name)


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main() -> None:
    from saeembed.analysis.cluster import cluster
    from saeembed.analysis.retrieve import search
    from saeembed.sae.default import load_default_sae
    from saeembed.store import Store

    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=1_000_000)
    ap.add_argument("--cluster-docs", type=int, default=100_000)
    ap.add_argument("--skip-query", action="store_true", help="skip the text-query timing (needs the model)")
    ap.add_argument("--only-cluster", action="store_true", help="time the clustering only")
    ap.add_argument("--only-search", action="store_true", help="time the searches only")
    a = ap.parse_args()
    SCRATCH.mkdir(parents=True, exist_ok=True)
    store = Store(SCRATCH / f"speed_{a.docs}_{a.cluster_docs}.duckdb")
    sae = store.register_sae(load_default_sae())
    t_build, _ = timed(lambda: build(store, "big", a.docs, sae.d_sae, 0))
    build(store, "c100k", a.cluster_docs, sae.d_sae, 1, groups=8)
    rows = store.query("SELECT count(*) AS n FROM activations")["n"][0]
    print(f"built in {t_build:.0f}s; {rows:,} activation rows", flush=True)
    rng = np.random.default_rng(0)
    common = store.query("SELECT feature FROM exemplars WHERE corpus_id = 1 AND rank = 1 ORDER BY feature")["feature"].to_numpy()
    res = {}
    if a.only_cluster:
        a.skip_query = True
    sets = [rng.choice(common, 10, replace=False).tolist() for _ in range(6)]
    if a.only_cluster:
        sets = []
    first, got = timed(lambda: search(store, "big", features=sets[0], top=20)) if sets else (0.0, None)
    if sets:
        later = [timed(lambda s=s: search(store, "big", features=s, top=20))[0] for s in sets[1:]]
        res["search 10 features, first"] = first
        res["search 10 features, median of next 5"] = statistics.median(later)
        w = [timed(lambda s=s: search(store, "big", features=s, top=20, where="bucket = 3",
                                      not_features=[int(common[0])]))[0] for s in sets[:4]]
        res["search + --where + --not-feature, median of 4"] = statistics.median(w)
    if not a.skip_query:
        q = ["mentions a specific date", "angry customer complaint", "football match results", "a recipe"]
        first, _ = timed(lambda: search(store, "big", q[0], top=20, match="describe"))
        res["text query (describe), first (embeds 4096 descriptions)"] = first
        res["text query (describe), median of next 3"] = statistics.median(
            [timed(lambda x=x: search(store, "big", x, top=20, match="describe"))[0] for x in q[1:]])
    if a.only_search:
        print(f"\n{a.docs:,} docs, {rows:,} activation rows; {machine()}")
        print("| step | seconds |\n|---|---|")
        for k_, v in res.items():
            print(f"| {k_} | {v:.2f} |")
        return
    import sklearn.cluster  # noqa: F401  (import once, ~2-15 s on a loaded machine; not clustering time)

    feats = list(range(4000, 4048)) + [int(common[1]), int(common[2])]  # 48 planted + 2 common
    t, r = timed(lambda: cluster(store, "c100k", features=feats, save=True, name="speed_hdbscan"))
    res[f"cluster {a.cluster_docs:,} docs on 50 features, HDBSCAN (+save)"] = t
    res_h = r
    t, r = timed(lambda: cluster(store, "c100k", features=feats, k=8, save=True, name="speed_kmeans"))
    res[f"cluster {a.cluster_docs:,} docs on 50 features, k-means k=8 (+save)"] = t
    print(f"\n{a.docs:,} docs, {rows:,} activation rows; {machine()}")
    print("| step | seconds |\n|---|---|")
    for k_, v in res.items():
        print(f"| {k_} | {v:.2f} |")
    print(f"HDBSCAN: {int((res_h.clusters['cluster'] >= 0).sum())} clusters, noise {res_h.noise_share:.1%}; "
          f"k-means: {r.clusters.height} clusters")
    store.close()


if __name__ == "__main__":
    main()
