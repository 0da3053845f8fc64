"""The diff scan's counting loop with 1 against 10 strongest rows kept per (code, feature), in memory.

    python benchmarks/diff/scan_topk.py 1000000      # documents (65.9 M rows at 1 M), 3 runs of each
"""
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import draw_rows, popularity, D_SAE
from saeembed.analysis.diff_scan import kernel as _kernel, floors
n = int(sys.argv[1])
rows = draw_rows(n, 0, popularity(D_SAE), np.random.default_rng(1))
doc, feat, val = rows["doc_idx"].to_numpy(), rows["feature"].to_numpy(), rows["value"].to_numpy()
code = np.where(np.arange(n) % 2 == 0, 0, 1).astype(np.int16); stratum = np.zeros(n, np.int8)
kern = _kernel()
def tops(k):
    tv, td = np.full((2, D_SAE, k), -np.inf, np.float32), np.full((2, D_SAE, k), -1, np.int32)
    return (tv, td, *floors(tv, td))
kern(doc[:1], feat[:1], val[:1], code, stratum, np.zeros((2, 1, D_SAE), np.int64), np.zeros((2, D_SAE)), *tops(1))
ts = {1: [], 10: []}; res = {}
for rep in range(3):
    for k in (1, 10):
        t = tops(k)
        t0 = time.perf_counter()
        kern(doc, feat, val, code, stratum, np.zeros((2, 1, D_SAE), np.int64), np.zeros((2, D_SAE)), *t)
        ts[k].append(time.perf_counter() - t0); res[k] = t
assert (res[10][0][:, :, 0] == res[1][0][:, :, 0]).all() and (res[10][1][:, :, 0] == res[1][1][:, :, 0]).all()
print(f"{len(doc):,} rows; counting loop seconds, k=1: {[round(t, 3) for t in ts[1]]}, k=10: {[round(t, 3) for t in ts[10]]}")
