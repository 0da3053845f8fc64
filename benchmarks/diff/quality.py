"""Diff quality on ../shared/data/eval/diff: do the top-10 diff features capture the known difference?

    python benchmarks/diff/quality.py [--prompts 300] [--splits 5] [--store /tmp/diff_bench.duckdb]

For each pair (concise vs verbose answers of GPT-4 and of Mixtral, friendly vs cold persona), the
same prompts answered both ways are split by prompt into train and held-out halves (split 0: sha1 of
the prompt; splits 1.. : seeded random halves of the prompts, so both answers to a prompt always sit
on the same side). The diff runs on the train halves only; its top-10 features (length control on
auto) feed a logistic regression, compared with one on all SAE features, both scored by AUROC on the
held-out halves. Target: AUROC(top-10) >= 0.9 x AUROC(all), on the mean over the splits (one split
of a 50-prompt pair leaves 25 test documents per side, an AUROC standard error of ~0.05). The top-10 features are printed with exemplars
from each side so a person can check they name the known difference.
Model and SAE: the embedded all-MiniLM-L6-v2 and default SAE. Skips cleanly without the data.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "eval" / "diff"
PAIRS = ["gpt4_concise_vs_verbose", "mixtral_concise_vs_verbose", "friendly_vs_cold"]


def is_train(prompt: str) -> bool:
    return int(hashlib.sha1(prompt.encode()).hexdigest(), 16) % 2 == 0


def split_of(prompts: list[str], k: int) -> dict[str, str]:
    """Split k: prompt -> train/test. k = 0 is the sha1 rule; k >= 1 a seeded random half."""
    if k == 0:
        return {p: "train" if is_train(p) else "test" for p in prompts}
    order = np.random.default_rng(1000 + k).permutation(sorted(prompts))
    train = set(order[: len(order) // 2].tolist())
    return {p: "train" if p in train else "test" for p in prompts}


def load_pair(name: str, n_prompts: int, n_splits: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    a = pl.read_ndjson(DATA / name / "a.jsonl")
    b = pl.read_ndjson(DATA / name / "b.jsonl")
    prompts = sorted(set(a["prompt"]) & set(b["prompt"]))
    rng = np.random.default_rng(0)
    keep = set(rng.permutation(prompts)[:n_prompts].tolist()) if len(prompts) > n_prompts else set(prompts)
    splits = [split_of(sorted(keep), k) for k in range(n_splits)]
    out = []
    for side in (a, b):
        side = side.filter(pl.col("prompt").is_in(list(keep))).unique("prompt", keep="first").sort("prompt")
        out.append(side.with_columns(
            pl.Series(f"split_{k}", [sp[p] for p in side["prompt"]], dtype=pl.Utf8) for k, sp in enumerate(splits)
        ))
    return out[0], out[1]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=300)
    ap.add_argument("--splits", type=int, default=5, help="train/test splits by prompt (results: mean over them)")
    ap.add_argument("--store", default="/tmp/diff_bench.duckdb")
    args = ap.parse_args()
    if not DATA.exists():
        print(f"skip: {DATA} not found")
        return 0
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    import saeembed
    from saeembed.analysis.diff import DiffConfig, diff_corpora
    from saeembed.analysis.selection import embedding_matrix, select
    from saeembed.encode.models import load_model
    from saeembed.documents import Documents
    from saeembed.sae.default import load_default_sae

    model, sae = load_model(None), load_default_sae()
    report = []
    with saeembed.Store(args.store) as st:
        for name in PAIRS:
            a, b = load_pair(name, args.prompts, args.splits)
            split_cols = [f"split_{k}" for k in range(args.splits)]
            t0 = time.perf_counter()
            for side, frame in (("a", a), ("b", b)):
                corpus = f"{name}_{side}"
                if not st.has_corpus(corpus):
                    st.add_corpus(corpus, Documents(frame.with_columns(doc_id=pl.col("prompt")), "text", "prompt",
                                                    ["prompt", "generator", *split_cols], str(DATA / name), 0))
                saeembed.encode_corpus(st, corpus, model=model, sae=sae)
            encode_s = time.perf_counter() - t0
            truth = json.loads((DATA / name / "truth.json").read_text())
            ca, cb = f"{name}_a", f"{name}_b"
            runs = []
            for col in split_cols:
                t0 = time.perf_counter()
                r = diff_corpora(st, ca, cb, where_a=f"{col} = 'train'", where_b=f"{col} = 'train'",
                                 config=DiffConfig(top=10, exemplars=1, snippet_width=45, separability=False))
                diff_s = time.perf_counter() - t0
                # the first section a reader sees (raw; benchmarks/diff/separability.py compares both)
                r.frame = r.frame.filter(pl.col("ranking") == r.summary["rankings"][0])
                top = r.frame["feature"].to_list()

                def xy(split):
                    xs, ys = [], []
                    for label, corpus in ((1, ca), (0, cb)):
                        sel = select(st, corpus, where=f"{col} = '{split}'")
                        xs.append(embedding_matrix(st, sel))
                        ys.append(np.full(sel.n_docs, label))
                    import scipy.sparse as sp

                    return sp.vstack(xs).tocsr(), np.concatenate(ys)

                xtr, ytr = xy("train")
                xte, yte = xy("test")
                aucs = {}
                for key, cols in (("top10", top), ("all", None)):
                    tr = xtr[:, cols] if cols is not None else xtr
                    te = xte[:, cols] if cols is not None else xte
                    clf = LogisticRegression(max_iter=2000, C=1.0).fit(tr, ytr)
                    aucs[key] = float(roc_auc_score(yte, clf.predict_proba(te)[:, 1]))
                runs.append({"split": col, "auroc_top10": aucs["top10"], "auroc_all": aucs["all"],
                             "ratio": aucs["top10"] / aucs["all"], "diff_seconds": diff_s,
                             "train_docs": int(xtr.shape[0]), "test_docs": int(xte.shape[0]),
                             "result": r})
                print(f"  {name} {col}: AUROC top-10 {aucs['top10']:.3f} vs all {aucs['all']:.3f} "
                      f"(ratio {aucs['top10'] / aucs['all']:.3f}); diff {diff_s:.2f} s", flush=True)
            ratios = np.array([x["ratio"] for x in runs])
            mean = {k: float(np.mean([x[k] for x in runs])) for k in ("auroc_top10", "auroc_all", "ratio")}
            r = runs[0]["result"]  # the features a person reads: split 0
            report.append({
                "pair": name, "prompts": a.height, "train_docs": runs[0]["train_docs"], "test_docs": runs[0]["test_docs"],
                "known_difference": truth["known_difference"], "auroc_top10": mean["auroc_top10"],
                "auroc_all": mean["auroc_all"], "ratio": mean["ratio"], "ratio_min": float(ratios.min()),
                "ratio_sd": float(ratios.std(ddof=1)) if len(ratios) > 1 else 0.0, "target_met": mean["ratio"] >= 0.9,
                "splits": [{k: v for k, v in x.items() if k != "result"} for x in runs],
                "diff_seconds": runs[0]["diff_seconds"], "encode_seconds": encode_s, "summary": r.summary,
                "top10": r.frame.select("feature", "freq_a", "freq_b", "diff", "diff_adj", "q_value", "more_in",
                                        "exemplar_a", "exemplar_b").to_dicts(),
            })
            print(f"\n## {name}: mean over {len(runs)} splits: AUROC top-10 {mean['auroc_top10']:.3f} vs all "
                  f"{mean['auroc_all']:.3f} (ratio {mean['ratio']:.3f}, min {ratios.min():.3f}); "
                  f"{r.summary['length_note']}", flush=True)
            print(f"known difference: {truth['known_difference']}")
            for row in report[-1]["top10"]:
                print(f"  f{row['feature']:>5} A {row['freq_a']:.2f} B {row['freq_b']:.2f} more in {row['more_in']} "
                      f"q={row['q_value']:.1e}\n      A: {row['exemplar_a']}\n      B: {row['exemplar_b']}")
    out = Path(__file__).resolve().parents[1] / "results" / "diff_quality.json"
    out.write_text(json.dumps({"machine": platform.platform(), "python": sys.version.split()[0], "pairs": report},
                              indent=1, default=str))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
