"""Cache SmolLM2-135M-Instruct residual activations (content tokens, fp16) at several layers in one pass.

The forward stops after the deepest layer asked for. Tokenization, windows (512) and the content-token
rule are saeembed's own; the tokenizer's BOS (<|im_start|>, the token every chat prompt starts with) is
put in front of each window, so the attention-sink position is a special token and never pooled.
Documents: ../shared/data/sae-train (all five files), shuffled with seed 0; held-out = sha1(text) % 20 == 0
(saeembed.sae.recipe.is_heldout).

    nice -n 10 python benchmarks/smollm2/cache_acts.py --out /tmp/smol/acts --layers 9 15 21 \
        --tokens 400000 --heldout-tokens 8000 --part 0 --parts 2      # and --part 1: every other document
    # a later run adding tokens without repeating documents: --reverse (takes them from the other end)

Shards (fp16 .npy, OUT/{train,heldout}_L{layer}_p{part}_sNNN.npy) are written every --shard-tokens, so a run
stopped for time keeps what it has; OUT/info_p{part}.json says how many tokens and seconds.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch

from saeembed.encode.models import load_model
from saeembed.encode.tokens import BosRule, batches, pad_token_id, tokenize
from saeembed.sae.recipe import is_heldout

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "sae-train"


class _Stop(Exception):
    pass


def documents(seed: int = 0) -> list[str]:
    texts = []
    for f in sorted(DATA.glob("*.jsonl")):
        texts += [json.loads(line)["text"] for line in f.open() if line.strip()]
    texts = [t for t in texts if t.strip()]
    random.Random(seed).shuffle(texts)
    return texts


def capture_layers(loaded, layers, texts, budget, bos: BosRule, window=512):
    """Yield {layer: [n, d] float16 array} per batch until `budget` content tokens are seen."""
    outs: dict[int, torch.Tensor] = {}
    last = max(layers)

    def hook_for(i):
        def hook(module, args, output):
            outs[i] = output[0] if isinstance(output, (tuple, list)) else output
            if i == last:
                raise _Stop
        return hook

    handles = [loaded.blocks[i].register_forward_hook(hook_for(i)) for i in layers]
    pad = pad_token_id(loaded.tokenizer)
    seen = 0
    try:
        for start in range(0, len(texts), 64):
            windows = tokenize(loaded.tokenizer, texts[start:start + 64], window=window - bos.extra_tokens)
            for b in batches(windows, pad_id=pad, max_windows=16, max_tokens=4096):
                ids, mask, shift = bos.apply(b.input_ids, b.attention_mask)
                with torch.inference_mode():
                    try:
                        loaded.model(input_ids=ids, attention_mask=mask)
                    except _Stop:
                        pass
                T = b.input_ids.shape[1]
                got = {i: bos.undo(outs[i].float(), shift, T)[b.content].half().numpy() for i in layers}
                seen += next(iter(got.values())).shape[0]
                yield got
                if seen >= budget:
                    return
    finally:
        for h in handles:
            h.remove()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--layers", type=int, nargs="+", required=True)
    ap.add_argument("--tokens", type=int, required=True)
    ap.add_argument("--heldout-tokens", type=int, default=0)
    ap.add_argument("--part", type=int, default=0)
    ap.add_argument("--parts", type=int, default=1)
    ap.add_argument("--no-bos", action="store_true")
    ap.add_argument("--reverse", action="store_true", help="take the documents from the end of the order")
    ap.add_argument("--shard-tokens", type=int, default=10_000)
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    loaded = load_model("smollm2", device="cpu")
    bos = BosRule() if args.no_bos else BosRule(add=int(loaded.tokenizer.bos_token_id))
    docs = documents()[args.part::args.parts]
    if args.reverse:  # a second run that must not repeat the documents a first (stopped) run took
        docs = docs[::-1]
    splits = {"train": [t for t in docs if not is_heldout(t)], "heldout": [t for t in docs if is_heldout(t)]}
    budgets = {"train": args.tokens, "heldout": args.heldout_tokens}
    info = {"model": loaded.name, "layers": args.layers, "bos": not args.no_bos, "load_s": time.time() - t0}
    for split in ("heldout", "train"):
        if not budgets[split]:
            continue
        t1 = time.time()
        parts = {i: [] for i in args.layers}
        shard = total = 0

        def flush():  # shards as we go: a run stopped for time keeps what it has
            nonlocal shard, total
            for i in args.layers:
                np.save(out / f"{split}_L{i}_p{args.part}_s{shard:03d}.npy", np.concatenate(parts[i]))
            total += sum(len(a) for a in parts[args.layers[0]])
            shard += 1
            for i in args.layers:
                parts[i].clear()
            info[split] = {"tokens": total, "seconds": round(time.time() - t1)}
            (out / f"info_p{args.part}.json").write_text(json.dumps(info, indent=1))
            print(split, info[split], flush=True)

        for got in capture_layers(loaded, args.layers, splits[split], budgets[split], bos):
            for i, a in got.items():
                parts[i].append(a)
            if sum(len(a) for a in parts[args.layers[0]]) >= args.shard_tokens:
                flush()
        if parts[args.layers[0]]:
            flush()


if __name__ == "__main__":
    main()
