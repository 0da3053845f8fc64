"""Do the listed diff features carry the difference? Separability on ../shared/data/eval/{diff,models}.

    python benchmarks/diff/separability.py [--prompts 300] [--store /tmp/diff_sep.duckdb] [--encode-only]
                                           [--tops 5,10,20,30]

Pairs: the three answer pairs of eval/diff (a.jsonl vs b.jsonl: the same prompts answered two ways) and
every pair of the five models of eval/models (the same prompts answered by each model). `--prompts`
prompts per pair (seeded sample of the prompts both sides answer), encoded with the embedded default
model and SAE into a store under /tmp (reused on a re-run).

Per pair, the default diff (length control auto) with separability folds grouped by the `prompt`
column: AUROC (5-fold grouped CV, logistic regression on binary presence) of the top-N features of
each ranking, of all features and of document length alone; and how many features of the
length-controlled section survive length control (q <= 0.05). Also for N in --tops and for both
rankings, to choose the default N and which section comes first. Target: top-10 of the first section
>= 0.9 of the all-feature AUROC on every pair. Skips cleanly without the data.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "eval"
PAIRS = ["gpt4_concise_vs_verbose", "mixtral_concise_vs_verbose", "friendly_vs_cold"]
MODELS = ["Meta-Llama-3-8B-Instruct", "claude-3-5-sonnet-20240620", "gpt-3.5-turbo-1106", "gpt-4o-2024-05-13",
          "gpt4_0613"]


def _read(path: Path) -> pl.DataFrame:
    return pl.read_ndjson(path).select("text", "prompt").unique("prompt", keep="first")


def corpora(n_prompts: int) -> dict[str, pl.DataFrame]:
    """corpus name -> rows (text, prompt) of the sampled prompts."""
    out = {}
    groups = [{f"{p}_a": _read(DATA / "diff" / p / "a.jsonl"), f"{p}_b": _read(DATA / "diff" / p / "b.jsonl")}
              for p in PAIRS]
    groups.append({f"m_{m}": _read(DATA / "models" / f"{m}.jsonl") for m in MODELS})
    for g in groups:
        prompts = sorted(set.intersection(*(set(f["prompt"]) for f in g.values())))
        keep = prompts
        if len(prompts) > n_prompts:
            keep = np.random.default_rng(0).permutation(prompts)[:n_prompts].tolist()
        for name, f in g.items():
            out[name] = f.filter(pl.col("prompt").is_in(keep)).sort("prompt")
    return out


def pairs() -> list[tuple[str, str]]:
    out = [(f"{p}_a", f"{p}_b") for p in PAIRS]
    return out + [(f"m_{x}", f"m_{y}") for x, y in itertools.combinations(MODELS, 2)]


def encode(st, frames: dict[str, pl.DataFrame]) -> float:
    import saeembed
    from saeembed.documents import Documents
    from saeembed.encode.models import load_model
    from saeembed.sae.default import load_default_sae

    model, sae = load_model(None), load_default_sae()
    t0 = time.perf_counter()
    for name, frame in frames.items():
        if not st.has_corpus(name):
            st.add_corpus(name, Documents(frame.with_columns(doc_id=pl.col("prompt")), "text", "prompt", ["prompt"],
                                          "eval", 0))
        saeembed.encode_corpus(st, name, model=model, sae=sae)
        print(f"encoded {name} ({frame.height} docs) at {time.perf_counter() - t0:.0f} s", flush=True)
    return time.perf_counter() - t0


def evaluate(st, a: str, b: str, tops: list[int]) -> dict:
    from saeembed.analysis.diff import diff_corpora
    from saeembed.analysis.selection import select
    from saeembed.analysis.separability import separability
    from saeembed.config import DiffConfig

    t0 = time.perf_counter()
    r = diff_corpora(st, a, b, config=DiffConfig(group_column="prompt", top=None, exemplars=1))
    diff_s = time.perf_counter() - t0
    sep = r.summary["separability"]
    f = r.frame
    rankings = f["ranking"].unique(maintain_order=True).to_list()
    lc = f.filter(pl.col("ranking") == "length_controlled")
    by_n = {}
    sa, sb = select(st, a), select(st, b)
    for rk in rankings:
        feats = f.filter(pl.col("ranking") == rk)["feature"].to_list()
        for n in tops:
            if n == sep["top"]:
                by_n[f"{rk}@{n}"] = sep["auroc_top"][rk]
                continue
            s = separability(st, sa, sb, {rk: feats[:n]}, group_column="prompt", with_all=False, with_length=False)
            by_n[f"{rk}@{n}"] = s["auroc_top"][rk]
    first = rankings[0]
    return {
        "a": a, "b": b, "n_a": r.summary["n_a"], "n_b": r.summary["n_b"], "rankings": rankings,
        "length_note": r.summary["length_note"], "length_finding": r.summary.get("length_finding"),
        "separability": sep, "share_first_top": sep["auroc_top"][first] / sep["auroc_all"],
        "share_listed": sep["auroc_top"].get("listed", sep["auroc_top"][first]) / sep["auroc_all"],
        "lc_survivors_q05": int((lc["q_value"] <= 0.05).sum()) if lc.height else None,
        "lc_top10_survivors_q05": int((lc.head(10)["q_value"] <= 0.05).sum()) if lc.height else None,
        "auroc_by_top": by_n, "diff_seconds": diff_s,
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=300)
    ap.add_argument("--store", default="/tmp/diff_sep.duckdb")
    ap.add_argument("--encode-only", action="store_true")
    ap.add_argument("--tops", default="5,10,20,30")
    ap.add_argument("--only", default=None, help="comma-separated substrings: evaluate only matching pairs")
    args = ap.parse_args()
    if not DATA.exists():
        print(f"skip: {DATA} not found")
        return 0
    import saeembed

    tops = [int(x) for x in args.tops.split(",")]
    with saeembed.Store(args.store) as st:
        encode_s = encode(st, corpora(args.prompts))
        if args.encode_only:
            return 0
        rows = []
        for a, b in pairs():
            if args.only and not any(s in f"{a} {b}" for s in args.only.split(",")):
                continue
            res = evaluate(st, a, b, tops)
            rows.append(res)
            s = res["separability"]
            print(f"{a} vs {b}: {res['rankings']} top-{s['top']} AUROC "
                  + ", ".join(f"{k} {v:.3f}" for k, v in s["auroc_top"].items())
                  + f"; all {s['auroc_all']:.3f}; length {s['auroc_length']:.3f}; share {res['share_first_top']:.3f}; "
                  f"share listed {res['share_listed']:.3f}; "
                  f"LC survivors q<=0.05: {res['lc_survivors_q05']} (top-10: {res['lc_top10_survivors_q05']}); "
                  f"by N: " + ", ".join(f"{k} {v:.3f}" for k, v in res["auroc_by_top"].items()), flush=True)
    out = ROOT / "benchmarks" / "results" / "diff_separability.json"
    out.write_text(json.dumps({"machine": platform.platform(), "python": sys.version.split()[0],
                               "prompts": args.prompts, "encode_seconds": encode_s, "pairs": rows}, indent=1, default=str))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
