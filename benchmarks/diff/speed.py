"""Speed and memory of diff and correlate on 1 M synthetic documents (~64 active of 16k features).

    python benchmarks/diff/speed.py build     [--docs 1000000] [--store /tmp/diff_speed.duckdb]
    python benchmarks/diff/speed.py build-two [--docs 1000000] [--store-two /tmp/diff_speed_two.duckdb]
    python benchmarks/diff/speed.py run       [--store ...] [--store-two ...]  # each analysis in a fresh process
    python benchmarks/diff/speed.py dense     [--docs 50000]    # sparse vs a dense NumPy implementation

`build-two` writes the same rows as two corpora `a` and `b` (docs/2 each; every document of `a` gets
the planted feature) for `diff a b`; `run` skips that task when the store is missing. Each result
records the load average (1 min) before the task: the dev box is shared, so timings are noisy.

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
import os
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


def draw_rows(n_docs: int, start: int, p: np.ndarray, rng, plant: str = "even") -> pl.DataFrame:
    """~ACTIVE distinct features per document drawn by popularity; half 'a' (even doc_idx) gets one
    extra feature from 0-9 (the planted difference); plant="all"/"none": every document / none."""
    draws = 70
    docs, feats = [], []
    step = 100_000
    for s in range(0, n_docs, step):
        m = min(step, n_docs - s)
        f = rng.choice(len(p), size=(m, draws), p=p).astype(np.int32)
        even = (start + s + np.arange(m)) % 2 == 0
        if plant != "even":
            even[:] = plant == "all"
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


def build(path: str, n_docs: int, two: bool = False) -> None:
    from saeembed.documents import Documents
    from saeembed.store import Store
    from saeembed.sae.model import SAE, SAEConfig
    import torch

    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    sae = SAE(SAEConfig(8, D_SAE, "topk", k=ACTIVE, hook="layers.1", model="synthetic"),
              torch.randn(8, D_SAE), torch.zeros(D_SAE), torch.randn(D_SAE, 8), torch.zeros(8), None)
    p = popularity(D_SAE)
    # one corpus `big` with a metadata column `half`, or (two) corpora `a` and `b` of n_docs/2 each
    corpora = [("a", n_docs // 2, "all"), ("b", n_docs - n_docs // 2, "none")] if two else [("big", n_docs, "even")]
    with Store(path) as st:
        s = st.register_sae(sae)
        for name, n, plant in corpora:
            frame = pl.DataFrame({
                "doc_id": [f"d{i}" for i in range(n)], "text": ["synthetic document"] * n,
                "half": ["a" if i % 2 == 0 else "b" for i in range(n)],
            })
            info = st.add_corpus(name, Documents(frame, "text", "doc_id", ["half"], "synthetic", 0))
            st.begin_encoding(info, s, "synthetic", "layers.1", {})
            chunk = 100_000
            for start in range(0, n, chunk):
                m = min(chunk, n - start)
                rows = draw_rows(m, start, p, rng, plant)
                docs = pl.DataFrame({"doc_idx": np.arange(start, start + m, dtype=np.int32),
                                     "n_tokens": rng.integers(20, 400, size=m).astype(np.int32),
                                     "n_windows": np.ones(m, dtype=np.int32)})
                st.write_encoded(info, s, rows, docs)
                print(f"  {name}: {start + m:,} docs written ({time.perf_counter() - t0:.0f}s)", flush=True)
            st.finish_encoding(info, s)
    print(f"built {n_docs:,} docs in {time.perf_counter() - t0:.0f}s")


TASKS = {
    "diff_slices": "from saeembed.analysis.diff import diff_slices, DiffConfig\n"
                   "r = diff_slices(st, 'big', \"half = 'a'\", \"half = 'b'\", config=DiffConfig(length_control='off'))\n"
                   "out = {'top': r.frame['feature'][:10].to_list()}",
    "diff_length_controlled": "from saeembed.analysis.diff import diff_slices, DiffConfig\n"
                              "r = diff_slices(st, 'big', \"half = 'a'\", \"half = 'b'\", config=DiffConfig(length_control='on'))\n"
                              "out = {'top': r.frame['feature'][:10].to_list()}",
    "diff_corpora": "from saeembed.analysis.diff import diff_corpora, DiffConfig\n"
                    "r = diff_corpora(st, 'a', 'b', config=DiffConfig(length_control='off'))\n"
                    "out = {'top': r.frame['feature'][:10].to_list()}",
    "diff_by": "from saeembed.analysis.diff import diff_by\n"
               "r = diff_by(st, 'big', 'half')\nout = {'groups': list(r)}",
    "correlate_npmi": "from saeembed.analysis.correlate import correlate, CorrelateConfig\n"
                      "r = correlate(st, 'big', config=CorrelateConfig(min_support=0.001, min_docs=5))\n"
                      "out = {'features': r.summary['features_with_support'], 'pairs': r.summary['pairs_counted']}",
}


TWO_CORPORA_TASKS = {"diff_corpora"}


def run_task(path: str, name: str) -> dict:
    code = (
        "import json, resource, time\nfrom saeembed.store import Store\n"
        f"st = Store({path!r}, read_only=True)\nt0 = time.perf_counter()\n"
        + TASKS[name]
        + "\nout['seconds'] = time.perf_counter() - t0\n"
        "out['peak_rss_gb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20\n"
        "print(json.dumps(out))\n"
    )
    load = os.getloadavg()[0]
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if res.returncode != 0:
        return {"error": res.stderr.strip().splitlines()[-1], "load_before": load}
    return {**json.loads(res.stdout.strip().splitlines()[-1]), "load_before": load}


def dense_vs_sparse(n_docs: int) -> dict:
    """The reference research code's way (dense N x F matrix in memory) against saeembed's sparse path,
    same computation: per-feature frequency difference of two halves and NPMI of all pairs."""
    import scipy.sparse as sp

    from saeembed.analysis.cooccur import pair_counts
    from saeembed.analysis.correlate import npmi_from_counts

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
    # saeembed's own counting loop (what diff runs over the store's rows, batch by batch): per side
    # code by doc_idx, counts, value sums and top exemplar per (side, feature) in one pass
    from saeembed.analysis.diff_scan import floors, kernel as _kernel

    kernel = _kernel()
    doc32, feat32 = rows["doc_idx"].to_numpy(), rows["feature"].to_numpy()
    val32 = rows["value"].to_numpy()
    code = np.where(half_a, 0, 1).astype(np.int16)
    stratum = np.zeros(n_docs, dtype=np.int8)
    def tops():
        top_value, top_doc = np.full((2, D_SAE, 1), -np.inf, np.float32), np.full((2, D_SAE, 1), -1, np.int32)
        return (top_value, top_doc, *floors(top_value, top_doc))

    kernel(doc32[:1], feat32[:1], val32[:1], code, stratum, np.zeros((2, 1, D_SAE), np.int64), np.zeros((2, D_SAE)),
           *tops())  # compile / load cache
    t0 = time.perf_counter()
    count = np.zeros((2, 1, D_SAE), np.int64)
    kernel(doc32, feat32, val32, code, stratum, count, np.zeros((2, D_SAE)), *tops())
    kernel_diff = count[0, 0] / half_a.sum() - count[1, 0] / (~half_a).sum()
    out["saeembed_kernel_diff_s"] = time.perf_counter() - t0
    assert np.allclose(kernel_diff, freq_diff_dense, atol=1e-6)
    t0 = time.perf_counter()
    doc, feat = rows["doc_idx"].to_numpy(), rows["feature"].to_numpy()
    c = np.bincount(feat, minlength=D_SAE)
    keep = np.arange(D_SAE)
    acc = pair_counts(doc, feat, n_docs, keep)
    iu_s = np.nonzero(acc)
    npmi_sparse = npmi_from_counts(acc[iu_s], c[iu_s[0]], c[iu_s[1]], n_docs)
    out["sparse_npmi_s"] = time.perf_counter() - t0
    assert np.allclose(ca - cb, freq_diff_dense, atol=1e-6)
    # same numbers: where pairs co-occur the two NPMI matrices agree
    dense_npmi = np.full((D_SAE, D_SAE), -1.0, dtype=np.float32)
    dense_npmi[iu] = npmi_dense
    assert np.allclose(npmi_sparse, dense_npmi[iu_s], atol=1e-5)
    out["diff_speedup"] = out["dense_diff_s"] / out["sparse_diff_s"]
    out["kernel_diff_speedup"] = out["dense_diff_s"] / out["saeembed_kernel_diff_s"]
    out["npmi_speedup"] = out["dense_npmi_s"] / out["sparse_npmi_s"]
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["build", "build-two", "run", "dense"])
    ap.add_argument("--docs", type=int, default=None)
    ap.add_argument("--store", default="/tmp/diff_speed.duckdb")
    ap.add_argument("--store-two", default="/tmp/diff_speed_two.duckdb")
    ap.add_argument("--tasks", default=",".join(TASKS))
    args = ap.parse_args()
    if args.what in ("build", "build-two"):
        two = args.what == "build-two"
        build(args.store_two if two else args.store, args.docs or 1_000_000, two=two)
    elif args.what == "run":
        results = {}
        for name in args.tasks.split(","):
            two = name in TWO_CORPORA_TASKS
            path = args.store_two if two else args.store
            if not os.path.exists(path):
                results[name] = {"skipped": f"no store at {path} (run {'build-two' if two else 'build'})"}
                continue
            results[name] = run_task(path, name)
        print(json.dumps({"machine": platform.platform(), "cpus": os.cpu_count(), **results}, indent=1))
    else:
        print(json.dumps(dense_vs_sparse(args.docs or 50_000), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
