"""Near-duplicate detection at scale: MinHash + LSH + exact verification on synthetic SAE embeddings.

    python benchmarks/dedupe_scale.py [--docs 100000] [--active 200] [--d-sae 4096] [--threshold 0.9]

Rows are random sets of `--active` features out of `--d-sae` (about what the default SAE's max-pooled
embeddings of short documents look like: 100-500 active features), drawn with a skewed feature
popularity so unrelated rows overlap as real ones do; 1 % of rows are planted near-copies of an
earlier row (a few features swapped, Jaccard about 0.92-0.95). Reports wall time, peak RSS, recall
of the planted pairs and how many pairs were found in all. No store and no model: this times
saeembed.analysis.dedupe alone.
"""

from __future__ import annotations

import argparse
import platform
import resource
import time

import numpy as np
import scipy.sparse as sp


def synthetic(n: int, active: int, d: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    popularity = rng.pareto(1.0, d) + 1
    p = popularity / popularity.sum()
    rows = []
    for _ in range(n):
        rows.append(np.unique(rng.choice(d, active, replace=False, p=p)))
    n_dup = n // 100
    dups = rng.choice(np.arange(1, n), n_dup, replace=False)
    truth = {}
    for j in dups:
        i = int(rng.integers(0, j))
        base = rows[i]
        swap = max(1, active // 50)
        keep = rng.choice(base, len(base) - swap, replace=False)
        new = rng.choice(np.setdiff1d(np.arange(d), base), swap, replace=False)
        rows[j] = np.unique(np.concatenate([keep, new]))
        truth[int(j)] = i
    indptr = np.cumsum([0] + [len(r) for r in rows])
    X = sp.csr_matrix((np.ones(indptr[-1], np.float32), np.concatenate(rows), indptr), shape=(n, d))
    return X, truth


def main() -> None:
    from saeembed.analysis.dedupe import greedy_dedupe, jaccard_pairs, near_duplicate_pairs

    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--active", type=int, default=200)
    ap.add_argument("--d-sae", type=int, default=4096)
    ap.add_argument("--threshold", type=float, default=0.9)
    args = ap.parse_args()
    t0 = time.perf_counter()
    X, truth = synthetic(args.docs, args.active, args.d_sae)
    t_gen = time.perf_counter() - t0
    planted_j = jaccard_pairs(X, np.array(list(truth.values())), np.array(list(truth)))
    t0 = time.perf_counter()
    i, j, jac = near_duplicate_pairs(X, args.threshold, method="minhash")
    t_pairs = time.perf_counter() - t0
    dup_of, _ = greedy_dedupe(X.shape[0], i, j, jac)
    t_all = time.perf_counter() - t0
    found = {(int(a), int(b)) for a, b in zip(i, j)}
    want = {(truth[b], b) for b in truth if planted_j[list(truth).index(b)] >= args.threshold}
    recall = len(want & found) / max(len(want), 1)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"machine: {platform.machine()} {platform.processor()} ; numpy {np.__version__}")
    print(f"docs {args.docs:,}, d_sae {args.d_sae}, active/doc {args.active}, nnz {X.nnz:,} (generated in {t_gen:.1f}s)")
    print(f"planted pairs {len(truth)}, Jaccard {planted_j.min():.3f}-{planted_j.max():.3f}; {len(want)} at >= {args.threshold}")
    print(f"minhash+LSH+verify: {t_pairs:.1f}s; with greedy dedupe {t_all:.1f}s; pairs found {len(found)}; "
          f"recall of planted pairs {recall:.4f}; rows dropped {(dup_of >= 0).sum()}; peak RSS {rss:,.0f} MiB")


if __name__ == "__main__":
    main()
