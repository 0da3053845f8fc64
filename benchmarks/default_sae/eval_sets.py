"""The eval text sets of the default-SAE selection benchmark, and their cached MiniLM activations.

    python benchmarks/default_sae/eval_sets.py --out /tmp/sae_select/acts [--layers 4 5] [--sets ...]

Every set comes from ../shared/data/eval (sources sae-train never saw, except tw_off_train: TweetEval
offensive *train* texts are part of sae-train's tweets.jsonl, so that set is used only to train probes,
never to measure reconstruction). Sizes are modest, seeded samples (SIZES) so that a 1-thread run fits.

Per set, OUT/<set>/ holds: docs.jsonl (text + labels, doc order), layer{N}.npy (fp16 content-token
activations, [tokens, 384]), tok_doc.npy / tok_id.npy / tok_span.npy (document, token id and character
span of every content token, in the same order) and dense.npy (the sentence-transformers embedding:
mean of the last block over every real token of the first 256-token window, L2-normalised: exactly
DenseEmbedder for texts up to 256 tokens). Tokenization, windows and content-token rules are
`saeembed encode`'s (saeembed.encode.tokens), so pooling these tokens equals what encode stores.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "eval"
PAIRS = ["gpt4_concise_vs_verbose", "mixtral_concise_vs_verbose", "friendly_vs_cold"]
SIZES = {"davidson": 2000, "tw_off_train": 2000, "diff_prompts": 100, "persona_props": 12, "persona_per_prop": 200}
# Sets never trained on by any candidate: reconstruction is measured on these.
HELDOUT_SETS = ["davidson", "tw_off_test", "syngoalex", "persona"] + [f"{p}_{s}" for p in PAIRS for s in "ab"]


def _jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _sample(rows: list[dict], n: int | None, seed: int = 0) -> list[dict]:
    return random.Random(seed).sample(rows, n) if n and n < len(rows) else rows


def build_sets() -> dict[str, list[dict]]:
    """set name -> rows (each with text and its labels)."""
    tox = DATA / "toxicity"
    sets = {
        "davidson": _sample(_jsonl(tox / "davidson.jsonl"), SIZES["davidson"]),
        "tw_off_train": _sample(_jsonl(tox / "tweeteval_offensive_train.jsonl"), SIZES["tw_off_train"]),
        "tw_off_test": _jsonl(tox / "tweeteval_offensive_test.jsonl"),
        "syngoalex": _jsonl(DATA / "cluster" / "syngoalex.jsonl"),
    }
    for p in PAIRS:  # the same prompts on both sides, as benchmarks/diff/separability.py samples them
        sides = {}
        for s in "ab":
            seen, rows = set(), []
            for r in _jsonl(DATA / "diff" / p / f"{s}.jsonl"):
                if r["prompt"] not in seen:
                    seen.add(r["prompt"])
                    rows.append({"text": r["text"], "prompt": r["prompt"]})
            sides[s] = rows
        prompts = sorted(set.intersection(*({r["prompt"] for r in v} for v in sides.values())))
        if len(prompts) > SIZES["diff_prompts"]:
            prompts = set(np.random.default_rng(0).permutation(prompts)[: SIZES["diff_prompts"]].tolist())
        for s, rows in sides.items():
            sets[f"{p}_{s}"] = sorted((r for r in rows if r["prompt"] in prompts), key=lambda r: r["prompt"])
    # persona: as benchmarks/prep_persona.py samples it (properties, half matching statements each)
    files = sorted((DATA / "retrieval" / "persona").glob("*.jsonl"))
    rng = random.Random(0)
    rows = []
    for f in sorted(rng.sample(files, SIZES["persona_props"])):
        data = _jsonl(f)
        pos = [r for r in data if r["matches"]]
        neg = [r for r in data if not r["matches"]]
        per = SIZES["persona_per_prop"]
        take = rng.sample(pos, min(per // 2, len(pos))) + rng.sample(neg, min(per - per // 2, len(neg)))
        rows += [{"text": r["text"], "property": r["property"], "matches": bool(r["matches"])} for r in take]
    sets["persona"] = rows
    return sets


def cache_set(loaded, rows: list[dict], out: Path, layers: list[int]) -> dict:
    import torch

    from saeembed.encode.tokens import batches, pad_token_id, tokenize

    out.mkdir(parents=True, exist_ok=True)
    texts = [r["text"] for r in rows]
    grabbed: dict[int, torch.Tensor] = {}
    last = loaded.n_layers - 1
    hooks = [loaded.blocks[n].register_forward_hook(
        lambda m, a, o, n=n: grabbed.__setitem__(n, o[0] if isinstance(o, tuple) else o)) for n in sorted(set(layers) | {last})]
    acts = {n: [] for n in layers}
    doc, tid, span = [], [], []
    dense = np.zeros((len(texts), loaded.hidden_size), np.float32)
    have_dense = np.zeros(len(texts), bool)
    window = loaded.max_window
    try:
        for start in range(0, len(texts), 256):
            windows = tokenize(loaded.tokenizer, texts[start : start + 256], window=window)
            seen: set[int] = set()
            for w in windows:  # tokenize lists a document's windows in order
                w.first = w.doc not in seen
                seen.add(w.doc)
            for b in batches(windows, pad_id=pad_token_id(loaded.tokenizer), max_windows=64, max_tokens=16384):
                with torch.inference_mode():
                    loaded.model(input_ids=b.input_ids, attention_mask=b.attention_mask)
                mask = b.content
                for n in layers:
                    acts[n].append(grabbed[n][mask].float().half().numpy())
                rows_, cols_ = mask.nonzero(as_tuple=True)
                wdoc = np.array([w.doc + start for w in b.windows])
                doc.append(wdoc[rows_.numpy()].astype(np.int32))
                tid.append(b.input_ids[mask].numpy().astype(np.int32))
                offs = np.zeros((*mask.shape, 2), np.int64)
                for r, w in enumerate(b.windows):
                    offs[r, : len(w.offsets)] = w.offsets
                span.append(offs[rows_.numpy(), cols_.numpy()].astype(np.int32))
                # dense: mean of the last block over real tokens of the doc's first window (<= 256 tokens)
                am = b.attention_mask.unsqueeze(-1).float()
                mean = (grabbed[last].float() * am).sum(1) / am.sum(1).clamp(min=1)
                mean = torch.nn.functional.normalize(mean, dim=-1).numpy()
                for r, w in enumerate(b.windows):
                    d = w.doc + start
                    if w.first:
                        dense[d], have_dense[d] = mean[r], True
    finally:
        for h in hooks:
            h.remove()
    for n in layers:
        np.save(out / f"layer{n}.npy", np.concatenate(acts[n]))
    np.save(out / "tok_doc.npy", np.concatenate(doc))
    np.save(out / "tok_id.npy", np.concatenate(tid))
    np.save(out / "tok_span.npy", np.concatenate(span))
    np.save(out / "dense.npy", dense)
    with open(out / "docs.jsonl", "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    n_tok = int(sum(len(d) for d in doc))
    return {"docs": len(rows), "tokens": n_tok, "dense_from_first_window": int(have_dense.sum())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/sae_select/acts")
    ap.add_argument("--layers", type=int, nargs="+", default=[4, 5])
    ap.add_argument("--sets", nargs="*", default=None)
    args = ap.parse_args()
    import torch

    from saeembed.encode.models import load_model

    torch.set_num_threads(1)
    loaded = load_model(None, device="cpu")
    sets = build_sets()
    stats_path = Path(args.out) / "stats.json"
    stats = json.loads(stats_path.read_text()) if stats_path.exists() else {}
    for name, rows in sets.items():
        if args.sets and name not in args.sets:
            continue
        if (Path(args.out) / name / "docs.jsonl").exists():
            continue
        t0 = time.perf_counter()
        s = cache_set(loaded, rows, Path(args.out) / name, args.layers)
        s["seconds"] = round(time.perf_counter() - t0, 1)
        stats[name] = s
        stats_path.write_text(json.dumps(stats, indent=1))
        print(name, s, f"{s['tokens'] / s['seconds']:.0f} tok/s", flush=True)


if __name__ == "__main__":
    main()
