"""Speed and memory of diff and correlate on 1 M synthetic documents (~64 active of 16k features).

    python benchmarks/diff/speed.py build [--docs 1000000] [--store /tmp/diff_speed.duckdb]
    python benchmarks/diff/speed.py run   [--store ...]     # each analysis in a fresh process
    python benchmarks/diff/speed.py dense [--docs 50000]    # sparse vs a dense NumPy implementation

Synthetic rows: feature popularity follows a Zipf-like law (a few features fire on many documents,
most on few, as in real SAEs); each document draws 70 features by popularity, ~64 distinct; values
are exponential. Metadata column `half` splits the corpus into two slices; half 'a' gets one extra
feature from 0-9 (the planted difference). Token lengths are drawn from the same distribution on both
halves. Targets (issue #4): diff <= 2 s, NPMI over all features with support >= 0.1 % <= 60 s,
peak memory <= 4 GB, on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time

import numpy as np
import polars as pl

D_SAE, ACTIVE = 16384, 64


def popularity(d_sae: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = 1.0 / np.arange(1, d_sae + 1) ** 0.8
    return rng.permutation(w / w.sum())


def draw_rows(n_docs: int, start: int, p: np.ndarray, rng) -> pl.DataFrame:
    """~ACTIVE distinct features per document drawn by popularity; half 'a' (even doc_idx) gets one
    extra feature from 0-9 (the planted difference)."""
    draws = 70
    docs, feats = [], []
    step = 100_000
    for s in range(0, n_docs, step):
        m = min(step, n_docs - s)
        f = rng.choice(len(p), size=(m, draws), p=p).astype(np.int32)
        even = (start + s + np.arange(m)) % 2 == 0
        f[even, 0] = rng.integers(0, 10, size=int(even.sum()))
        f.sort(axis=1)
        keep = np.ones_like(f, dtype=bool)
        keep[:, 1:] = f[:, 1:] != f[:, :-1]
        d = np.broadcast_to(np.arange(start + s, start + s + m, dtype=np.int32)[:, None], f.shape)
        docs.append(d[keep])
        feats.append(f[keep])
    doc = np.concatenate(docs).astype(np.int32)
    feat = np.concatenate(feats).astype(np.int32)
    return pl.DataFrame({
        "doc_idx": doc, "feature": feat,
        "value": rng.exponential(1.0, size=len(doc)).astype(np.float32),
        "active_tokens": np.ones(len(doc), dtype=np.int32),
        "span_start": np.zeros(len(doc), dtype=np.int32), "span_end": np.ones(len(doc), dtype=np.int32),
    })


def build(path: str, n_docs: int) -> None:
    from saeembed.documents import Documents
    from saeembed.store import Store
    from saeembed.sae.model import SAE, SAEConfig
    import torch

    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    sae = SAE(SAEConfig(8, D_SAE, "topk", k=ACTIVE, hook="layers.1", model="synthetic"),
              torch.randn(8, D_SAE), torch.zeros(D_SAE), torch.randn(D_SAE, 8), torch.zeros(8), None)
    frame = pl.DataFrame({
        "doc_id": [f"d{i}" for i in range(n_docs)], "text": ["synthetic document"] * n_docs,
        "half": ["a" if i % 2 == 0 else "b" for i in range(n_docs)],
    })
    p = popularity(D_SAE)
    with Store(path) as st:
        info = st.add_corpus("big", Documents(frame, "text", "doc_id", ["half"], "synthetic", 0))
        s = st.register_sae(sae)
        st.begin_encoding(info, s, "synthetic", "layers.1", {})
        chunk = 100_000
        for start in range(0, n_docs, chunk):
            m = min(chunk, n_docs - start)
            rows = draw_rows(m, start, p, rng)
            docs = pl.DataFrame({"doc_idx": np.arange(start, start + m, dtype=np.int32),
                                 "n_tokens": rng.integers(20, 400, size=m).astype(np.int32),
                                 "n_windows": np.ones(m, dtype=np.int32)})
            st.write_encoded(info, s, rows, docs)
            print(f"  {start + m:,} docs written ({time.perf_counter() - t0:.0f}s)", flush=True)
        st.finish_encoding(info, s)
    print(f"built {n_docs:,} docs in {time.perf_counter() - t0:.0f}s")


TASKS = {
    "diff_slices": "from saeembed.analysis.diff import diff_slices, DiffConfig\n"
                   "r = diff_slices(st, 'big', \"half = 'a'\", \"half = 'b'\", config=DiffConfig(length_control='off'))\n"
                   "out = {'top': r.frame['feature'][:10].to_list()}",
    "diff_length_controlled": "from saeembed.analysis.diff import diff_slices, DiffConfig\n"
                              "r = diff_slices(st, 'big', \"half = 'a'\", \"half = 'b'\", config=DiffConfig(length_control='on'))\n"
                              "out = {'top': r.frame['feature'][:10].to_list()}",
    "diff_by": "from saeembed.analysis.diff import diff_by\n"
               "r = diff_by(st, 'big', 'half')\nout = {'groups': list(r)}",
    "correlate_npmi": "from saeembed.analysis.correlate import correlate, CorrelateConfig\n"
                      "r = correlate(st, 'big', config=CorrelateConfig(min_support=0.001, min_docs=5))\n"
                      "out = {'features': r.summary['features_with_support'], 'pairs': r.summary['pairs_listed']}",
}


def run_task(path: str, name: str) -> dict:
    code = (
        "import json, resource, time\nfrom saeembed.store import Store\n"
        f"st = Store({path!r}, read_only=True)\nt0 = time.perf_counter()\n"
        + TASKS[name]
        + "\nout['seconds'] = time.perf_counter() - t0\n"
        "out['peak_rss_gb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20\n"
        "print(json.dumps(out))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if res.returncode != 0:
        return {"error": res.stderr.strip().splitlines()[-1]}
    return json.loads(res.stdout.strip().splitlines()[-1])


def dense_vs_sparse(n_docs: int) -> dict:
    """The reference research code's way (dense N x F matrix in memory) against saeembed's sparse path,
    same computation: per-feature frequency difference of two halves and NPMI of all pairs."""
    import scipy.sparse as sp

    from saeembed.analysis.correlate import cooccurrence, npmi_from_counts

    rng = np.random.default_rng(1)
    rows = draw_rows(n_docs, 0, popularity(D_SAE), rng)
    half_a = np.arange(n_docs) % 2 == 0
    out = {"docs": n_docs}
    t0 = time.perf_counter()
    dense = np.zeros((n_docs, D_SAE), dtype=np.float32)
    dense[rows["doc_idx"].to_numpy(), rows["feature"].to_numpy()] = rows["value"].to_numpy()
    active = dense > 0
    freq_diff_dense = active[half_a].mean(0) - active[~half_a].mean(0)
    out["dense_diff_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    a = active.astype(np.float32)
    co_dense = a.T @ a  # F x F
    counts = np.diag(co_dense).copy()
    iu = np.triu_indices(D_SAE, 1)
    npmi_dense = npmi_from_counts(co_dense[iu], counts[iu[0]], counts[iu[1]], n_docs)
    out["dense_npmi_s"] = time.perf_counter() - t0
    out["dense_matrix_gb"] = dense.nbytes / 2**30 + co_dense.nbytes / 2**30
    del dense, a, co_dense
    t0 = time.perf_counter()
    x = sp.csr_matrix((np.ones(rows.height, dtype=np.float32), (rows["doc_idx"].to_numpy(), rows["feature"].to_numpy())),
                      shape=(n_docs, D_SAE))
    ca = np.asarray(x[half_a].sum(0)).ravel() / half_a.sum()
    cb = np.asarray(x[~half_a].sum(0)).ravel() / (~half_a).sum()
    out["sparse_diff_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    co = cooccurrence(x).tocoo()
    c = np.asarray(x.sum(0)).ravel()
    npmi_sparse = npmi_from_counts(co.data, c[co.row], c[co.col], n_docs)
    out["sparse_npmi_s"] = time.perf_counter() - t0
    assert np.allclose(ca - cb, freq_diff_dense, atol=1e-6)
    dense_lookup = npmi_dense.reshape(-1)
    # same numbers: the sparse pairs equal the dense ones where they co-occur
    idx = {(i, j): k for k, (i, j) in enumerate(zip(*iu))} if n_docs <= 2000 else None
    if idx is not None:
        assert np.allclose(npmi_sparse, [dense_lookup[idx[(i, j)]] for i, j in zip(co.row, co.col)])
    out["diff_speedup"] = out["dense_diff_s"] / out["sparse_diff_s"]
    out["npmi_speedup"] = out["dense_npmi_s"] / out["sparse_npmi_s"]
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["build", "run", "dense"])
    ap.add_argument("--docs", type=int, default=None)
    ap.add_argument("--store", default="/tmp/diff_speed.duckdb")
    ap.add_argument("--tasks", default=",".join(TASKS))
    args = ap.parse_args()
    if args.what == "build":
        build(args.store, args.docs or 1_000_000)
    elif args.what == "run":
        results = {name: run_task(args.store, name) for name in args.tasks.split(",")}
        print(json.dumps({"machine": platform.platform(), "cpus": __import__("os").cpu_count(), **results}, indent=1))
    else:
        print(json.dumps(dense_vs_sparse(args.docs or 50_000), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
