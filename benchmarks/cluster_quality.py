"""Steered clustering quality: syngoalex (three independent label axes) and agnews (4 topics).

    python benchmarks/cluster_quality.py [--k 4]
    python benchmarks/cluster_quality.py --grid      # syngoalex: --axis topic/style vs dense over k x seed

Stores are built once in the scratch folder (default model + SAE encode, dense embeddings). For each
run: adjusted Rand index (ARI) and NMI of the clusters against every label axis. Dense baseline:
k-means (same k, same seed) on the all-MiniLM-L6-v2 sentence embeddings. SAE runs go through
saeembed.analysis.cluster exactly as `saeembed cluster CORPUS --axis ... --k 4` does.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, build_store, machine, need, read_jsonl  # noqa: E402


def scores(pred, truth: dict) -> dict:
    out = {}
    for axis, y in truth.items():
        out[f"ARI {axis}"] = adjusted_rand_score(y, pred)
        out[f"NMI {axis}"] = normalized_mutual_info_score(y, pred)
    return out


def run_set(name: str, rows: list[dict], axes: list[str], runs: list[tuple], k: int, seed: int) -> pl.DataFrame:
    from saeembed.analysis.cluster import cluster
    from saeembed.encode.dense import corpus_embeddings

    for i, r in enumerate(rows):
        r["doc_id"] = f"{name}{i}"
    store, t = build_store(name, rows, corpus=name)
    print(name, "built", {k_: round(v, 1) for k_, v in t.items()}, flush=True)
    docs = store.documents(name, text=False)
    truth = {a: docs[a].to_numpy() for a in axes}
    out = []
    dense = corpus_embeddings(store, name)
    t0 = time.perf_counter()
    pred = KMeans(k, n_init=4, random_state=seed).fit_predict(dense)
    out.append({"set": name, "run": f"dense k-means k={k}", "noise": 0.0, "seconds": time.perf_counter() - t0,
                **scores(pred, truth)})
    for label, kwargs in runs:
        t0 = time.perf_counter()
        res = cluster(store, name, save=False, seed=seed, **kwargs)
        pred = res.assignments.sort("doc_idx")["cluster"].to_numpy()
        out.append({"set": name, "run": label, "noise": res.noise_share, "seconds": time.perf_counter() - t0,
                    **scores(pred, truth)})
        print(out[-1], flush=True)
    store.close()
    return pl.DataFrame(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sets", default="syngoalex,agnews")
    ap.add_argument("--grid", action="store_true", help="k in 3,4,6 x seed in 0,1,2 on syngoalex, then stop")
    a = ap.parse_args()
    if a.grid:
        return grid()
    k = a.k
    frames = []
    if "syngoalex" in a.sets:
        rows = read_jsonl(need(DATA / "eval" / "cluster" / "syngoalex.jsonl"))
        runs = [
            (f"SAE all features k-means k={k}", dict(k=k)),
            (f"SAE --axis topic k={k}", dict(axis="topic", k=k)),
            (f"SAE --axis style k={k}", dict(axis="style", k=k)),
            (f"SAE --axis language k={k}", dict(axis="language", k=k)),
            (f"SAE --axis 'subject matter of the text' k={k}", dict(axis="subject matter of the text", k=k)),
            (f"SAE --axis 'writing style' k={k}", dict(axis="writing style", k=k)),
            ("SAE --axis topic, HDBSCAN", dict(axis="topic")),
            ("SAE --axis style, HDBSCAN", dict(axis="style")),
            ("SAE all features, HDBSCAN", dict()),
        ]
        frames.append(run_set("syngoalex", rows, ["topic", "language", "style"], runs, k, a.seed))
    if "agnews" in a.sets:
        rows = read_jsonl(need(DATA / "eval" / "cluster" / "agnews.jsonl"))
        runs = [
            (f"SAE all features k-means k={k}", dict(k=k)),
            (f"SAE --axis topic k={k}", dict(axis="topic", k=k)),
            (f"SAE --axis 'news topic' k={k}", dict(axis="news topic", k=k)),
            ("SAE all features, HDBSCAN", dict()),
            ("SAE --axis topic, HDBSCAN", dict(axis="topic")),
        ]
        frames.append(run_set("agnews", rows, ["label"], runs, k, a.seed))
    print(machine())
    with pl.Config(tbl_rows=40, tbl_cols=20, tbl_formatting="MARKDOWN", tbl_hide_dataframe_shape=True,
                   float_precision=3, tbl_hide_column_data_types=True, tbl_width_chars=250):
        for f in frames:
            print(f.drop("set"))


def grid() -> None:
    """Is the steering robust? ARI on the asked-for axis, SAE --axis vs dense k-means, same k and seed."""
    from saeembed.analysis.cluster import cluster
    from saeembed.encode.dense import corpus_embeddings

    rows = read_jsonl(need(DATA / "eval" / "cluster" / "syngoalex.jsonl"))
    for i, r in enumerate(rows):
        r["doc_id"] = f"syngoalex{i}"
    store, _ = build_store("syngoalex", rows, corpus="syngoalex")
    docs = store.documents("syngoalex", text=False)
    dense = corpus_embeddings(store, "syngoalex")
    out = []
    for k in (3, 4, 6):
        for seed in (0, 1, 2):
            pred = KMeans(k, n_init=4, random_state=seed).fit_predict(dense)
            row = {"k": k, "seed": seed}
            for axis in ("topic", "style"):
                truth = docs[axis].to_numpy()
                res = cluster(store, "syngoalex", axis=axis, k=k, seed=seed, save=False)
                got = res.assignments.sort("doc_idx")["cluster"].to_numpy()
                row[f"dense ARI {axis}"] = adjusted_rand_score(truth, pred)
                row[f"SAE --axis {axis} ARI"] = adjusted_rand_score(truth, got)
                row[f"{axis}: axis used"] = f"{res.params['axis_found']['number']} ({res.params['axis_found']['kind']})"
            out.append(row)
            print(row, flush=True)
    store.close()
    print(machine())
    with pl.Config(tbl_rows=40, tbl_cols=20, tbl_formatting="MARKDOWN", tbl_hide_dataframe_shape=True,
                   float_precision=3, tbl_hide_column_data_types=True, tbl_width_chars=250):
        print(pl.DataFrame(out))


if __name__ == "__main__":
    main()
