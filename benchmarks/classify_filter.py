"""Quality of `classify` (toxicity) and of the `filter` quality model, SAE probe vs dense and TF-IDF.

    python benchmarks/classify_filter.py --store /tmp/bench6.duckdb [--tweets 3000] [--davidson 3000] [--alpaca 2000]
    python benchmarks/classify_filter.py --store /tmp/bench6.duckdb --prep-only   # ingest + encode + dense only

Data: ../shared/data/eval (skips cleanly when absent). To keep encodes affordable on a shared 2-core
CPU the sets are subsampled with a fixed seed (0): `--tweets` rows of tweeteval_offensive_train (the
official test split is used whole), `--davidson` rows of davidson, `--alpaca` rows of
alpaca_random9k_quality. Model + SAE: the embedded defaults (all-MiniLM-L6-v2, layers.4, 4096 TopK).
Dense baseline: logistic regression on MiniLM sentence embeddings; TF-IDF: word 1-2 grams. All three
get their C by 5-fold CV on the training rows and are scored on the same held-out rows.

Experiments (issue 6):
  tweeteval   train on (subsampled) train, test on the official test split
  davidson    80 / 20 split of (subsampled) davidson
  transfer    tweeteval -> davidson (all of it) and davidson -> tweeteval test
  curve       tweeteval with 1 %, 10 %, 100 % of the training rows, tested on the test split
  quality     alpaca: probe trained on 20 % to predict claude_score_ge_4_5, AUROC on the other 80 %,
              and the share of flagged (=1) rows kept when dropping the lowest-scored 50 %
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "eval"


def subsample(src: Path, n: int | None, seed: int = 0) -> list[dict]:
    rows = [json.loads(line) for line in open(src, encoding="utf-8")]
    rng = random.Random(seed)
    if n and n < len(rows):
        rows = rng.sample(rows, n)
    for i, r in enumerate(rows):
        r["bench_id"] = i
        r["u"] = rng.random()  # for learning-curve subsets
    return rows


def prep(store, args) -> None:
    from saeembed.documents import ingest
    from saeembed.encode.dense import corpus_embeddings
    from saeembed.encode.pipeline import encode_corpus

    sets = {
        "tw_train": (DATA / "toxicity/tweeteval_offensive_train.jsonl", args.tweets),
        "tw_test": (DATA / "toxicity/tweeteval_offensive_test.jsonl", None),
        "davidson": (DATA / "toxicity/davidson.jsonl", args.davidson),
        "alpaca": (DATA / "filter/alpaca_random9k_quality.jsonl", args.alpaca),
    }
    tmp = Path(tempfile.mkdtemp())
    for name, (src, n) in sets.items():
        if not store.has_corpus(name):
            path = tmp / f"{name}.jsonl"
            rows = subsample(src, n)
            keep = ("text", "toxic", "class", "label", "claude_score_ge_4_5", "bench_id", "u")
            path.write_text("\n".join(json.dumps({k: r[k] for k in keep if k in r}) for r in rows) + "\n")
            ingest(store, path, corpus=name, id_column="bench_id")
        t0 = time.perf_counter()
        res = encode_corpus(store, name)
        print(f"[prep] {name}: encoded {res.docs_encoded} docs in {time.perf_counter() - t0:.0f}s", flush=True)
        t0 = time.perf_counter()
        corpus_embeddings(store, name)
        print(f"[prep] {name}: dense embeddings in {time.perf_counter() - t0:.0f}s", flush=True)


def row(name, m):
    return {"auroc": m.get("auroc"), "macro_f1": m.get("macro_f1"), "f1": m.get("f1"), "n": m.get("n")}


def run(store, args) -> dict:
    from saeembed.analysis.classify import ProbeConfig, _Baseline, evaluate_classifier, train_classifier
    from saeembed.analysis.selection import select

    out: dict = {}
    B = ["dense", "tfidf"]
    t0 = time.perf_counter()
    # tweeteval: fit on train (a small 5 % slice held out only because train_classifier always holds out)
    tr = train_classifier(store, "tw_train", "toxic", "tw", config=ProbeConfig(test_size=0.05))
    ev = evaluate_classifier(store, "tw", "tw_test", "toxic", baselines=B)
    out["tweeteval"] = {"sae": row("sae", ev), **{b: row(b, ev["baselines"][b]) for b in B},
                        "features_used": tr.info["features_used"], "C": tr.info["C"]}
    print("[tweeteval]", out["tweeteval"], flush=True)
    # davidson 80/20
    tr = train_classifier(store, "davidson", "toxic", "dv", config=ProbeConfig(test_size=0.2), baselines=B)
    out["davidson"] = {"sae": row("sae", tr.metrics), **{b: row(b, tr.baselines[b]) for b in B},
                       "features_used": tr.info["features_used"], "C": tr.info["C"]}
    print("[davidson]", out["davidson"], flush=True)
    # transfer both ways (baselines trained on the same training rows as the probe)
    ev = evaluate_classifier(store, "tw", "davidson", "toxic", baselines=B)
    out["transfer tweeteval->davidson"] = {"sae": row("sae", ev), **{b: row(b, ev["baselines"][b]) for b in B}}
    ev = evaluate_classifier(store, "dv", "tw_test", "toxic", baselines=B)
    out["transfer davidson->tweeteval"] = {"sae": row("sae", ev), **{b: row(b, ev["baselines"][b]) for b in B}}
    print("[transfer]", out["transfer tweeteval->davidson"], out["transfer davidson->tweeteval"], flush=True)
    # learning curve
    curve = {}
    for frac in (0.01, 0.1, 1.0):
        name = f"tw{int(frac * 100)}"
        train_classifier(store, "tw_train", "toxic", name, where=f"u < {frac}" if frac < 1 else None,
                         config=ProbeConfig(test_size=0.05, folds=3 if frac < 0.05 else 5))
        ev = evaluate_classifier(store, name, "tw_test", "toxic", baselines=B)
        curve[f"{frac:.0%}"] = {"n_train": len(store.load_classifier(name).params["train_doc_idx"]),
                                "sae": row("sae", ev), **{b: row(b, ev["baselines"][b]) for b in B}}
        print("[curve]", frac, curve[f"{frac:.0%}"], flush=True)
    out["curve"] = curve
    # quality model on alpaca: 20 % train, 80 % test
    tr = train_classifier(store, "alpaca", "claude_score_ge_4_5", "aq", config=ProbeConfig(test_size=0.8), baselines=B)
    clf = store.load_classifier("aq")
    test_idx = np.asarray(clf.params["test_doc_idx"])
    sel = select(store, "alpaca")
    labels = store.documents("alpaca", text=False, doc_idx=test_idx.tolist())["claude_score_ge_4_5"].to_numpy()
    sae_scores = store.doc_scores(sel.corpus, ["aq"]).filter(
        __import__("polars").col("doc_idx").is_in(test_idx.tolist())).sort("doc_idx")["aq"].to_numpy()

    def kept_share(scores):
        order = np.argsort(scores, kind="stable")
        kept = np.ones(len(scores), bool)
        kept[order[: len(scores) // 2]] = False
        return float(labels[kept].sum() / max(labels.sum(), 1))

    cfg = ProbeConfig(test_size=0.8)
    train_idx = np.asarray(clf.params["train_doc_idx"])
    ytr = store.documents("alpaca", text=False, doc_idx=train_idx.tolist())["claude_score_ge_4_5"].to_numpy()
    q = {"sae": row("sae", tr.metrics) | {"flagged_kept_at_50pct": kept_share(sae_scores)}}
    for b in B:
        bl = _Baseline(b, cfg, store).fit(sel, train_idx, ytr.astype(int))
        q[b] = row(b, tr.baselines[b]) | {"flagged_kept_at_50pct": kept_share(bl.predict(sel, test_idx))}
    # length alone, for scale (REFERENCES: length is a strong confound on instruction data)
    n_chars = store.documents("alpaca", text=True, doc_idx=test_idx.tolist())["text"].str.len_chars().to_numpy()
    from sklearn.metrics import roc_auc_score

    q["length_only"] = {"auroc": float(roc_auc_score(labels, n_chars)), "flagged_kept_at_50pct": kept_share(n_chars)}
    q["n_train"], q["n_test"], q["positives_test"] = len(train_idx), len(test_idx), int(labels.sum())
    out["quality"] = q
    print("[quality]", q, flush=True)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", required=True)
    ap.add_argument("--tweets", type=int, default=3000)
    ap.add_argument("--davidson", type=int, default=3000)
    ap.add_argument("--alpaca", type=int, default=2000)
    ap.add_argument("--prep-only", action="store_true")
    ap.add_argument("--out", default=None, help="write the results JSON here")
    args = ap.parse_args()
    if not DATA.exists():
        print(f"skipped: {DATA} not found")
        return
    import torch

    from saeembed.store import Store

    torch.set_num_threads(2)
    with Store(args.store) as store:
        prep(store, args)
        if args.prep_only:
            return
        res = run(store, args)
    res["machine"] = f"{platform.machine()} {platform.processor() or ''} torch threads {torch.get_num_threads()}"
    res["args"] = vars(args)
    text = json.dumps(res, indent=1, default=str)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
