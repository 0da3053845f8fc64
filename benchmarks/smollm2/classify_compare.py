"""Toxicity probe: SmolLM2 + its SAE against the embedded MiniLM default, same tweets, same split.

    python benchmarks/smollm2/classify_compare.py --sae /tmp/smol/sae_final [--docs 1200] [--out-dir /tmp/smol]

Data: a seeded sample of ../shared/data/eval/toxicity/tweeteval_offensive_train.jsonl (label column `toxic`),
encoded as plain text by both (the SmolLM2 SAE was trained on plain-text windows). `saeembed classify`'s
probe (L1 logistic regression, C by cross-validation, held-out split with the default seed) per model.
Writes OUT_DIR/classify_compare.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "eval" / "toxicity" / "tweeteval_offensive_train.jsonl"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sae", required=True)
    ap.add_argument("--docs", type=int, default=1200)
    ap.add_argument("--out-dir", default="/tmp/smol")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    import saeembed
    from saeembed.analysis.classify import train_classifier
    from saeembed.config import EncodeConfig
    from saeembed.documents import Documents
    from saeembed.encode.models import load_model
    from saeembed.sae.formats import load_sae

    frame = pl.read_ndjson(DATA).select("text", "toxic").unique("text").sort("text").sample(args.docs, seed=0)
    frame = frame.with_row_index("doc_id").with_columns(pl.col("doc_id").cast(str))
    out = {"docs": frame.height, "positives": int(frame["toxic"].sum())}
    for label, model, sae in (("minilm", None, None), ("smollm2", "smollm2", args.sae)):
        with saeembed.Store(Path(args.out_dir) / f"classify_{label}.duckdb") as st:
            if not st.has_corpus("tox"):
                st.add_corpus("tox", Documents(frame, "text", "doc_id", ["toxic"], "eval", 0))
            t0 = time.perf_counter()
            r = saeembed.encode_corpus(st, "tox", model=load_model(model, device="cpu") if model else None,
                                       sae=load_sae(sae) if sae else None,
                                       config=EncodeConfig(device="cpu", batch_size=16))
            res = train_classifier(st, "tox", "toxic", f"tox_{label}")
            out[label] = {"encode_seconds": round(time.perf_counter() - t0, 1), "tokens": r.tokens,
                          **{k: res.metrics.get(k) for k in ("auroc", "average_precision", "f1", "macro_f1")},
                          **{k: res.info[k] for k in ("n_train", "n_test", "C", "features_used")}}
            print(label, out[label], flush=True)
    path = Path(args.out_dir) / "classify_compare.json"
    path.write_text(json.dumps(out, indent=1, default=str))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
