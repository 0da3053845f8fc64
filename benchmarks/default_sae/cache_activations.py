"""Step 1 of training the embedded default SAE: cache MiniLM activations of the training text.

    python benchmarks/default_sae/cache_activations.py --out /tmp/saeembed_acts [--layers 3 4]

Reads ../shared/data/sae-train/*.jsonl (never committed), shuffles documents with a fixed seed, holds out
every document whose text hash falls in the last 1/20 (the eval split), runs all-MiniLM-L6-v2 once up to
the deepest requested block (capturing every requested layer on the way) and writes content-token
activations as fp16 .npy shards: OUT/layer{N}/{train,eval}_{i:04d}.npy, with the source file of every
token in OUT/source/{train,eval}_{i:04d}.npy (int8, index into stats.json "sources"). Same tokenization
and special-token rules as `saeembed encode`.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "sae-train"
SHARD_TOKENS = 262_144


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/saeembed_acts")
    ap.add_argument("--layers", type=int, nargs="+", default=[3, 4])
    ap.add_argument("--max-docs", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    ap.add_argument("--start-doc", type=int, default=0,
                    help="resume: skip the first N train documents (a stopped run's last 'train: N/...' line) "
                         "and number new shards from the stopped run's shard count; eval is skipped")
    args = ap.parse_args()

    from saeembed.encode.capture import ActivationCapture
    from saeembed.encode.models import load_model
    from saeembed.encode.tokens import batches, pad_token_id, tokenize
    from saeembed.sae.recipe import is_heldout

    if args.threads:
        torch.set_num_threads(args.threads)
    sources = sorted(f.stem for f in DATA.glob("*.jsonl"))
    tagged = []  # (text, source id): the source id of every token goes to OUT/source/ (leave-one-source-out)
    for i, name in enumerate(sources):
        tagged += [(json.loads(line)["text"], i) for line in open(DATA / f"{name}.jsonl", encoding="utf-8") if line.strip()]
    random.Random(0).shuffle(tagged)
    tagged = [(t, s) for t, s in tagged if t.strip()][: args.max_docs]
    splits = {"train": [p for p in tagged if not is_heldout(p[0])], "eval": [p for p in tagged if is_heldout(p[0])]}
    first_shard = 0
    if args.start_doc:
        # Same seed, same order: the first start_doc train documents are already in the stopped run's shards.
        first_shard = json.loads((Path(args.out) / "stats.json").read_text())["train"]["shards"]
        splits = {"train": splits["train"][args.start_doc :]}
    loaded = load_model(None, device="auto")
    layers = sorted(args.layers)
    out = Path(args.out)
    # Hooks on the shallower blocks grab their outputs; the capture stops after the deepest.
    grabbed: dict[int, torch.Tensor] = {}
    handles = [
        loaded.blocks[n].register_forward_hook(lambda m, a, o, n=n: grabbed.__setitem__(n, o[0] if isinstance(o, tuple) else o))
        for n in layers[:-1]
    ]
    stats = {}
    if args.start_doc:
        stopped = json.loads((Path(args.out) / "stats.json").read_text())["train"]
    try:
        for split, pairs in splits.items():
            docs = [t for t, _ in pairs]
            doc_source = np.array([s for _, s in pairs], dtype=np.int8)
            buffers = {n: [] for n in layers}
            src_buffer = []
            shard = first_shard if split == "train" else 0
            n_tokens = 0
            t0 = time.perf_counter()
            with ActivationCapture(loaded, f"layers.{layers[-1]}") as cap:
                for start in range(0, len(docs), 256):
                    windows = tokenize(loaded.tokenizer, docs[start : start + 256], window=loaded.max_window)
                    for b in batches(windows, pad_id=pad_token_id(loaded.tokenizer), max_windows=64, max_tokens=16384):
                        deepest = cap(b.input_ids, b.attention_mask)
                        mask = b.content.to(deepest.device)
                        buffers[layers[-1]].append(deepest[mask].half().cpu().numpy())
                        for n in layers[:-1]:
                            buffers[n].append(grabbed[n][mask].float().half().cpu().numpy())
                        rows = mask.nonzero(as_tuple=True)[0].cpu().numpy()
                        src_buffer.append(doc_source[start + np.array([w.doc for w in b.windows])[rows]])
                        n_tokens += int(mask.sum())
                    if sum(len(x) for x in buffers[layers[-1]]) >= SHARD_TOKENS or start + 256 >= len(docs):
                        for n in layers:
                            d = out / f"layer{n}"
                            d.mkdir(parents=True, exist_ok=True)
                            np.save(d / f"{split}_{shard:04d}.npy", np.concatenate(buffers[n]))
                            buffers[n] = []
                        (out / "source").mkdir(parents=True, exist_ok=True)
                        np.save(out / "source" / f"{split}_{shard:04d}.npy", np.concatenate(src_buffer))
                        src_buffer = []
                        shard += 1
                        print(f"{split}: {min(start + 256, len(docs))}/{len(docs)} docs, {n_tokens:,} tokens, "
                              f"{n_tokens / (time.perf_counter() - t0):,.0f} tok/s", flush=True)
            stats[split] = {"docs": len(docs), "tokens": n_tokens, "shards": shard}
            if args.start_doc and split == "train":
                stats[split] = {"docs": len(docs) + args.start_doc, "tokens": n_tokens + stopped["tokens"], "shards": shard}
    finally:
        for h in handles:
            h.remove()
    (out / "stats.json").write_text(json.dumps({"layers": layers, "model": loaded.name, "sources": sources, **stats},
                                               indent=2))
    print(json.dumps(stats))


if __name__ == "__main__":
    main()
