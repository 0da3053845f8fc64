"""Encode throughput and memory on CPU, against the two ways people usually get activations.

    python benchmarks/encode_throughput.py [--docs 2000] [--memory]

Texts: ../shared/data/sae-train (skips cleanly when absent). Model: the embedded all-MiniLM-L6-v2;
SAE: TopK, 8x width (3072 latents), k=32, at layers.3. Three timings over the same texts, the same
tokenization and the same length-sorted batches:
  bare      tokenize + forward through blocks 0-3 only (the floor for any encoder at layers.3)
  encode    saeembed's full encode: the above + SAE + max-pooling + writing to a DuckDB store, in a store
            that already holds this SAE's random-token probe (every corpus after the first); the first
            encode with an SAE also runs that probe once (128 random-token texts), reported beside it
  full      tokenize + full-model forward with output_hidden_states=True, same batches
  usual     the usual way: batches of 32 in file order, tokenizer(padding=True, truncation=True),
            full model with output_hidden_states=True (tokens/s counts the tokens it kept)
--memory additionally runs the encode of 2k and 20k documents in fresh processes and reports peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
import torch

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sae-train"
HOOK = "layers.3"


def load_texts(n: int) -> list[str]:
    texts: list[str] = []
    for name in ("ag_news.jsonl", "bbc_news.jsonl", "assistant_responses.jsonl", "wikitext2.jsonl", "tweets.jsonl"):
        for line in open(DATA / name, encoding="utf-8"):
            texts.append(json.loads(line)["text"])
    # Interleave sources so every size sees the same mix.
    import random

    random.Random(0).shuffle(texts)
    while len(texts) < n:
        texts = texts + texts
    return texts[:n]


def random_sae(d_in: int = 384, d_sae: int = 3072, k: int = 32):
    from saeembed.sae.model import SAE, SAEConfig

    g = torch.Generator().manual_seed(0)
    W = torch.randn(d_in, d_sae, generator=g) / d_in**0.5
    return SAE(SAEConfig(d_in, d_sae, "topk", k=k, hook=HOOK, model="sentence-transformers/all-MiniLM-L6-v2"),
               W, torch.zeros(d_sae), W.T.clone(), torch.zeros(d_in))


def bare_and_full(loaded, texts, cfg, window):
    from saeembed.encode.capture import ActivationCapture
    from saeembed.encode.tokens import batches, pad_token_id, tokenize

    pad = pad_token_id(loaded.tokenizer)
    results = {}
    for mode in ("bare", "full"):
        tokens = 0
        t0 = time.perf_counter()
        with ActivationCapture(loaded, HOOK) if mode == "bare" else _null() as cap:
            for start in range(0, len(texts), cfg.chunk_docs):
                windows = tokenize(loaded.tokenizer, texts[start : start + cfg.chunk_docs], window=window)
                for b in batches(windows, pad_id=pad, max_windows=cfg.batch_size, max_tokens=cfg.max_batch_tokens):
                    if mode == "bare":
                        cap(b.input_ids, b.attention_mask)
                    else:
                        with torch.inference_mode():
                            loaded.model(input_ids=b.input_ids, attention_mask=b.attention_mask,
                                         output_hidden_states=True)
                    tokens += int(b.content.sum())
        results[mode] = tokens / (time.perf_counter() - t0)
    tokens = 0
    t0 = time.perf_counter()
    for start in range(0, len(texts), 32):
        enc = loaded.tokenizer(texts[start : start + 32], padding=True, truncation=True, max_length=window,
                               return_tensors="pt", return_special_tokens_mask=True)
        with torch.inference_mode():
            loaded.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], output_hidden_states=True)
        tokens += int((enc["attention_mask"] * (1 - enc["special_tokens_mask"])).sum())
    results["usual"] = tokens / (time.perf_counter() - t0)
    return results


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *a):
        return False


def encode_once(texts, store_path, *, probed: bool = False):
    """saeembed's encode of `texts` into a new store. probed: the store already knows this SAE's
    random-token probe (computed once per SAE and store), as for every corpus after the first."""
    from saeembed.encode.models import load_model
    from saeembed.encode.pipeline import EncodeConfig, encode_corpus
    from saeembed.documents import Documents
    from saeembed.store import Store

    frame = pl.DataFrame({"doc_id": [str(i) for i in range(len(texts))], "text": texts})
    with Store(store_path) as store:
        loaded = load_model(None, device="cpu")
        _warm_up(loaded)
        if probed:
            store.add_corpus("first", Documents(frame.head(4), "text", "id", [], "bench", 0))
            encode_corpus(store, "first", model=loaded, sae=random_sae(), config=EncodeConfig(device="cpu"))
        store.add_corpus("bench", Documents(frame, "text", "id", [], "bench", 0))
        result = encode_corpus(store, "bench", model=loaded, sae=random_sae(), config=EncodeConfig(device="cpu"))
    return result, loaded


def _warm_up(loaded) -> None:
    """A few forward passes first, so one-off start-up costs land on no measurement."""
    enc = loaded.tokenizer(["warm up the model threads and allocator"] * 16, return_tensors="pt")
    with torch.inference_mode():
        for _ in range(3):
            loaded.model(**enc)


def peak_rss_child(n_docs: int) -> dict:
    code = (
        "import sys, json, resource, tempfile, os; sys.path.insert(0, %r);"
        "from encode_throughput import load_texts, encode_once;"
        "d = tempfile.mkdtemp(); r, _ = encode_once(load_texts(%d), os.path.join(d, 's.duckdb'));"
        "print(json.dumps({'docs': r.docs_encoded, 'tokens': r.tokens, 'seconds': r.seconds,"
        " 'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))"
    ) % (str(Path(__file__).parent), n_docs)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--memory", action="store_true")
    args = ap.parse_args()
    if not DATA.exists():
        print(f"skipped: {DATA} not found")
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    texts = load_texts(args.docs)
    from saeembed.encode.pipeline import EncodeConfig

    with tempfile.TemporaryDirectory() as d:
        first, loaded = encode_once(texts, os.path.join(d, "s.duckdb"))
        result, _ = encode_once(texts, os.path.join(d, "t.duckdb"), probed=True)
    cfg = EncodeConfig(device="cpu")
    window = min(cfg.window or loaded.max_window, loaded.max_window)
    other = bare_and_full(loaded, texts, cfg, window)
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
                   f"{torch.get_num_threads()} threads",
        "docs": args.docs,
        "tokens": result.tokens,
        "encode_tokens_per_s": round(result.tokens_per_s),
        "first_encode_with_sae_tokens_per_s": round(first.tokens_per_s),  # + the one-off random-token probe
        "bare_blocks_0_3_tokens_per_s": round(other["bare"]),
        "full_hidden_states_tokens_per_s": round(other["full"]),
        "usual_way_tokens_per_s": round(other["usual"]),
        "encode_vs_bare": round(result.tokens_per_s / other["bare"], 3),
        "encode_vs_full": round(result.tokens_per_s / other["full"], 3),
        "encode_vs_usual": round(result.tokens_per_s / other["usual"], 3),
        "first_encode_with_sae_vs_bare": round(first.tokens_per_s / other["bare"], 3),
    }
    if args.memory:
        report["memory"] = {n: peak_rss_child(n) for n in (2000, 20000)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
