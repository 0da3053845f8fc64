"""Step 2 of training the embedded default SAE: train TopK / BatchTopK SAEs on cached activations and measure them.

    python benchmarks/default_sae/train_default.py --acts /tmp/saeembed_acts --layer 3 --latents 4096 \
        [--k 32] [--architecture topk|batchtopk] [--epochs 2] [--max-tokens N] [--save saeembed/default_sae]
        [--max-shards N] [--exclude-source tweets] [--threads 1]

Streams the fp16 shards written by cache_activations.py (train split, shard order shuffled per epoch,
tokens shuffled by the trainer's buffer), trains with saeembed's own trainer, evaluates on the held-out
eval shards (documents never trained on) and prints one JSON line of metrics. With --save, writes the SAE
in SAELens format (fp16) with its model card: that folder is what ships inside the package.
--exclude-source trains without one sae-train source (leave-one-source-out) and also measures the SAE on
every token of that source ("left_out_source"); --max-shards fixes the budget to the first N shards.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch


def shard_stream(files: list[Path], epochs: int, seed: int, chunk: int = 65_536, drop_source: int | None = None,
                 only_source: int | None = None):
    """fp16 shards as float32 chunks; drop_source / only_source: leave out / keep only the tokens of that
    source (ids in OUT/source/, written by cache_activations.py)."""
    rng = random.Random(seed)
    for _ in range(epochs):
        order = list(files)
        rng.shuffle(order)
        for f in order:
            a = np.load(f)
            if drop_source is not None:
                a = a[np.load(f.parent.parent / "source" / f.name) != drop_source]
            if only_source is not None:
                a = a[np.load(f.parent.parent / "source" / f.name) == only_source]
            for start in range(0, len(a), chunk):
                yield torch.from_numpy(a[start : start + chunk].astype(np.float32))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--acts", default="/tmp/saeembed_acts")
    ap.add_argument("--layer", type=int, default=3)
    ap.add_argument("--latents", type=int, default=4096)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--architecture", default="topk", choices=["topk", "batchtopk"])
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--max-tokens", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=2048)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-shards", type=int, default=None, help="train on the first N train shards only")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    ap.add_argument("--save", default=None)
    ap.add_argument("--checkpoint-dir", default=None,
                    help="checkpoint the run here; the same command resumes it (same --acts, --seed and options)")
    ap.add_argument("--exclude-source", default=None,
                    help="leave this sae-train source (file stem, e.g. tweets) out of training: leave-one-source-out")
    args = ap.parse_args()

    from saeembed.sae.metrics import evaluate_sae
    from saeembed.sae.train import TrainConfig, train_sae

    folder = Path(args.acts) / f"layer{args.layer}"
    train_files = sorted(folder.glob("train_*.npy"))[: args.max_shards]
    eval_files = sorted(folder.glob("eval_*.npy"))
    stats = json.loads((Path(args.acts) / "stats.json").read_text()) if (Path(args.acts) / "stats.json").exists() else {}
    # A cache still being written has no stats.json yet: its sources are the sorted sae-train file stems.
    sources = stats.get("sources") or sorted(f.stem for f in (Path(__file__).resolve().parents[2].parent / "shared"
                                                              / "data" / "sae-train").glob("*.jsonl"))
    drop = sources.index(args.exclude_source) if args.exclude_source else None
    if drop is None:
        available = sum(np.load(f, mmap_mode="r").shape[0] for f in train_files) * args.epochs
    else:
        available = sum(int((np.load(f.parent.parent / "source" / f.name) != drop).sum()) for f in train_files) * args.epochs
    total = min(available, args.max_tokens or available)
    steps = total // args.batch_size
    cfg = TrainConfig(
        d_sae=args.latents, k=args.k, architecture=args.architecture, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
        max_tokens=args.max_tokens, warmup_steps=min(1000, max(1, steps // 10)),
        dead_tokens_threshold=min(10_000_000, max(args.batch_size, total // 10)),
        log_every=max(1, steps // 20), checkpoint_dir=args.checkpoint_dir, checkpoint_every=200,
    )
    t0 = time.perf_counter()

    def show(s: dict) -> None:
        print(f"  step {s['step']:>6} tokens {s['tokens']:>10,} fvu {s['fvu']:.4f} l0 {s['l0']:.1f} "
              f"dead {s['dead_fraction']:.3f} ({time.perf_counter() - t0:.0f}s)", flush=True)

    if args.threads:
        torch.set_num_threads(args.threads)
    sae, train_stats = train_sae(shard_stream(train_files, args.epochs, args.seed, drop_source=drop), 384, cfg,
                                 progress=show)
    quality = evaluate_sae(sae, shard_stream(eval_files, 1, 0)) if eval_files else None
    unseen = None
    if drop is not None:  # the left-out source: its train and eval documents were never trained on
        unseen = evaluate_sae(sae, shard_stream(train_files + eval_files, 1, 0, only_source=drop))
    result = {
        "layer": args.layer, "latents": args.latents, "k": args.k, "architecture": args.architecture, "epochs": args.epochs,
        "excluded_source": args.exclude_source,
        "tokens_seen": train_stats.get("tokens_seen"), "train_seconds": round(time.perf_counter() - t0),
        "heldout": {k: v for k, v in quality.to_dict().items() if k != "density_histogram"} if quality else None,
    }
    if unseen is not None:
        result["left_out_source"] = {k: v for k, v in unseen.to_dict().items() if k != "density_histogram"}
    print(json.dumps(result))
    if args.save:
        from saeembed.sae.formats import save_sae

        sae.cfg.model = "sentence-transformers/all-MiniLM-L6-v2"
        sae.cfg.hook = f"layers.{args.layer}"
        card = {
            "model": sae.cfg.model,
            "hook": sae.cfg.hook,
            "architecture": args.architecture,  # BatchTopK is saved as JumpReLU with its learned threshold
            "d_in": sae.d_in,
            "d_sae": sae.d_sae,
            "k": args.k,
            "data": [x for x in ["wikitext2", "bbc_news", "ag_news", "assistant_responses", "tweets"]
                     if x != args.exclude_source],
            "data_note": "../shared/data/sae-train (WikiText-2, BBC News, AG News, AlpacaEval answers, TweetEval)",
            "heldout_split": "documents with sha1(text) % 20 == 0, never trained on",
            "train_documents": stats.get("train", {}).get("docs"),
            "tokens_seen": train_stats.get("tokens_seen"),
            "epochs": args.epochs,
            "train_config": {k: v for k, v in cfg.resolved(384).__dict__.items()},
            "heldout": quality.to_dict() if quality else None,
            "trained_with": "benchmarks/default_sae/train_default.py (saeembed's trainer)",
        }
        sae.cfg.extra["model_card"] = card
        path = save_sae(sae, args.save, model_card=card, dtype=torch.float16)
        (Path(path) / "MODEL_CARD.json").write_text(json.dumps(card, indent=2, default=str))
        print(f"saved {path}")


if __name__ == "__main__":
    main()
