"""Store throughput at scale with synthetic sparse rows: write N documents x K features into the
store's table and into Parquet shards, read them back through `activations` (the view), compact.

    python benchmarks/scale.py --docs 1000000 --features-per-doc 32 --out benchmarks/results/scale.md

Rows are generated (no model): per document K distinct features of a d_sae = 16384 SAE, Zipf-like,
so the numbers measure the store, not the encoder.
"""

from __future__ import annotations

import argparse
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

D_SAE = 16384


def rows_for(first: int, n: int, k: int, rng) -> tuple[pl.DataFrame, pl.DataFrame]:
    doc = np.repeat(np.arange(first, first + n, dtype=np.int32), k)
    feat = (rng.zipf(1.3, size=n * k) % D_SAE).astype(np.int32)
    acts = pl.DataFrame({"doc_idx": doc, "feature": feat, "value": rng.random(n * k, dtype=np.float32),
                         "active_tokens": np.ones(n * k, np.int32), "span_start": np.zeros(n * k, np.int32),
                         "span_end": np.full(n * k, 4, np.int32)}).unique(["doc_idx", "feature"])
    docs = pl.DataFrame({"doc_idx": np.arange(first, first + n, dtype=np.int32),
                         "n_tokens": np.full(n, 64, np.int32), "n_windows": np.ones(n, np.int32)})
    return acts, docs


def timed(label, fn, results):
    t = time.perf_counter()
    out = fn()
    results.append((label, time.perf_counter() - t))
    print(f"{label}: {results[-1][1]:.2f}s", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=1_000_000)
    ap.add_argument("--features-per-doc", type=int, default=32)
    ap.add_argument("--batch-docs", type=int, default=50_000)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    from saeembed.documents import Documents
    from saeembed.store import Store
    from tests.conftest import make_sae

    work = Path(tempfile.mkdtemp(prefix="saeembed-scale-"))
    results: list[tuple[str, float]] = []
    sizes = {}
    try:
        frame = pl.DataFrame({"doc_id": [f"d{i}" for i in range(args.docs)], "text": ["synthetic text"] * args.docs,
                              "group": np.arange(args.docs) % 10})
        for mode in ("table", "shards"):
            path = work / f"{mode}.duckdb"
            with Store(path) as st:
                timed(f"{mode}: ingest {args.docs:,} docs", lambda: st.add_corpus("c", Documents(
                    frame, "text", "id", ["group"], "synthetic", 0)), results)
                info = st.corpus("c")
                sae = st.register_sae(make_sae(8, D_SAE))
                st.begin_encoding(info, sae, "synthetic", "layers.1", {})
                rng = np.random.default_rng(0)

                def write():
                    n = 0
                    for first in range(0, args.docs, args.batch_docs):
                        acts, docs = rows_for(first, min(args.batch_docs, args.docs - first), args.features_per_doc, rng)
                        st.write_encoded(info, sae, acts, docs, shard=(mode == "shards"))
                        n += acts.height
                    return n

                n_rows = timed(f"{mode}: write activations", write, results)
                timed(f"{mode}: finish (exemplars)", lambda: st.finish_encoding(info, sae), results)
            sizes[mode] = sum(f.stat().st_size for f in work.rglob("*") if f.is_file() and f.name.startswith(mode)
                              or f.parent.parent.name == f"{mode}.duckdb.shards")
            with Store(path, read_only=True) as st:
                timed(f"{mode}: open", lambda: Store(path, read_only=True).close(), results)
                timed(f"{mode}: count(*) FROM activations",
                      lambda: st.query("SELECT count(*) FROM activations"), results)
                timed(f"{mode}: feature frequencies (GROUP BY feature)", lambda: st.query(
                    "SELECT feature, count(*) AS docs FROM activations WHERE corpus_id = ? AND sae_key = ? "
                    "GROUP BY feature ORDER BY docs DESC", [info.corpus_id, sae.sae_key]), results)
                timed(f"{mode}: feature_summary top 20", lambda: st.feature_summary("c", top=20), results)
                from saeembed.analysis.selection import embedding_matrix, select

                sel = timed(f"{mode}: select where group = 3", lambda: select(st, "c", where="group = 3"), results)
                timed(f"{mode}: CSR of the selection ({sel.n_docs:,} docs)", lambda: embedding_matrix(st, sel), results)
        shard_path = work / "shards.duckdb"
        with Store(shard_path) as st:
            n_shards = len(st.shards())
            timed(f"shards: compact {n_shards} shards into 1", lambda: st.compact(), results)
            timed("shards: feature frequencies after compact", lambda: st.query(
                "SELECT feature, count(*) AS docs FROM activations GROUP BY feature ORDER BY docs DESC"), results)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        lines = [
            "# Store at scale: synthetic sparse rows, table vs Parquet shards",
            "",
            f"Command: `python benchmarks/scale.py --docs {args.docs} --features-per-doc {args.features_per_doc} "
            f"--batch-docs {args.batch_docs}`",
            f"Machine: {platform.machine()}, Python {platform.python_version()}, 2 CPU cores shared with 4 other "
            "engineers' jobs (load average well above 2: times are upper bounds)",
            f"{args.docs:,} documents, {n_rows:,} activation rows (d_sae {D_SAE}); peak RSS of the whole run "
            f"{peak:,.0f} MB; files on disk: table store {sizes.get('table', 0) / 1e6:,.0f} MB, sharded store + shards "
            f"{sizes.get('shards', 0) / 1e6:,.0f} MB",
            "",
            "| step | seconds |",
            "|---|---:|",
            *[f"| {label} | {sec:.2f} |" for label, sec in results],
        ]
        text = "\n".join(lines) + "\n"
        print(text)
        if args.out:
            Path(args.out).write_text(text)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
