"""Diffs of chat-model answer sets: SmolLM2-135M-Instruct + its SAE (chat template, prompt as the user turn)
against the embedded MiniLM default, on the same documents.

    python benchmarks/smollm2/diff_compare.py --sae /tmp/smol/sae_final [--prompts 40] [--out-dir /tmp/smol]

Pairs: ../shared/data/eval/diff/friendly_vs_cold (all 50 prompts) and gpt4_concise_vs_verbose (--prompts,
the first of the same seeded permutation benchmarks/diff/separability.py samples). Each side is one corpus
with its `prompt` column; SmolLM2 encodes each answer as the assistant turn after that prompt
(`--chat-template --prompt-column prompt`); MiniLM encodes the answer text alone. Per pair and model: the
default diff (length control auto, top 20) with separability folds grouped by prompt, the top features with
one exemplar each, and encode time. Writes OUT_DIR/diff_compare.json; stores OUT_DIR/diff_{minilm,smol}.duckdb.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "eval" / "diff"
PAIRS = ["friendly_vs_cold", "gpt4_concise_vs_verbose"]


def _read(path: Path) -> pl.DataFrame:
    return pl.read_ndjson(path).select("text", "prompt").unique("prompt", keep="first")


def corpora(n_prompts: int) -> dict[str, pl.DataFrame]:
    out = {}
    for p in PAIRS:
        a, b = _read(DATA / p / "a.jsonl"), _read(DATA / p / "b.jsonl")
        prompts = sorted(set(a["prompt"]) & set(b["prompt"]))
        if len(prompts) > n_prompts:
            prompts = np.random.default_rng(0).permutation(prompts)[:n_prompts].tolist()
        for side, f in (("a", a), ("b", b)):
            out[f"{p}_{side}"] = f.filter(pl.col("prompt").is_in(prompts)).sort("prompt")
    return out


def run(store_path: Path, frames, model, sae, chat: bool, top_show: int) -> dict:
    import saeembed
    from saeembed.analysis.diff import diff_corpora
    from saeembed.config import DiffConfig, EncodeConfig
    from saeembed.documents import Documents

    res = {"encode_seconds": {}, "pairs": {}}
    cfg = EncodeConfig(chat_template=chat, prompt_column="prompt" if chat else None, device="cpu", batch_size=8)
    with saeembed.Store(store_path) as st:
        for name, frame in frames.items():
            if not st.has_corpus(name):
                st.add_corpus(name, Documents(frame.with_columns(doc_id=pl.col("prompt")), "text", "prompt",
                                              ["prompt"], "eval", 0))
            t0 = time.perf_counter()
            r = saeembed.encode_corpus(st, name, model=model, sae=sae, config=cfg)
            res["encode_seconds"][name] = round(time.perf_counter() - t0, 1)
            print(f"encoded {name}: {r.docs_encoded} docs, {r.tokens} tokens, {r.seconds:.0f} s", flush=True)
        for p in PAIRS:
            d = diff_corpora(st, f"{p}_a", f"{p}_b", config=DiffConfig(group_column="prompt", top=20, exemplars=1))
            f = d.frame
            keep = [c for c in ("ranking", "feature", "label", "freq_a", "freq_b", "q_value", "exemplar_a",
                                "exemplar_b") if c in f.columns]
            top = f.group_by("ranking", maintain_order=True).head(top_show).select(keep)
            res["pairs"][p] = {"n_a": d.summary["n_a"], "n_b": d.summary["n_b"],
                               "length_note": d.summary.get("length_note"),
                               "separability": d.summary["separability"], "top": top.to_dicts()}
            s = d.summary["separability"]
            print(f"{p}: AUROC top {s['auroc_top']} all {s['auroc_all']:.3f} length {s['auroc_length']:.3f}",
                  flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sae", required=True, help="the SmolLM2 SAE folder")
    ap.add_argument("--prompts", type=int, default=40)
    ap.add_argument("--out-dir", default="/tmp/smol")
    ap.add_argument("--only", choices=["minilm", "smol"], default=None)
    ap.add_argument("--show", type=int, default=8)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    from saeembed.encode.models import load_model
    from saeembed.sae.formats import load_sae

    out = Path(args.out_dir)
    frames = corpora(args.prompts)
    result_path = out / "diff_compare.json"
    results = json.loads(result_path.read_text()) if result_path.exists() else {}
    results.update({"machine": platform.platform(), "prompts": {k: v.height for k, v in frames.items()}})
    if args.only in (None, "minilm"):
        results["minilm"] = run(out / "diff_minilm.duckdb", frames, None, None, False, args.show)
        result_path.write_text(json.dumps(results, indent=1, default=str))
    if args.only in (None, "smol"):
        t0 = time.perf_counter()
        model = load_model("smollm2", device="cpu")
        results["smol_load_seconds"] = round(time.perf_counter() - t0, 1)
        results["smol"] = run(out / "diff_smol.duckdb", frames, model, load_sae(args.sae), True, args.show)
        result_path.write_text(json.dumps(results, indent=1, default=str))
    print(f"wrote {result_path}")


if __name__ == "__main__":
    main()
