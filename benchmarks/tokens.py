"""Disk and time cost of `encode --keep-tokens` on the demo corpora (sample_data/*.jsonl), default model
and SAE, CPU: each corpus is encoded twice into fresh stores (without, then with token rows).

Run: python3 benchmarks/tokens.py   (writes nothing in the repo; scratch stores go to $TMPDIR)
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _size(paths) -> int:
    return sum(f.stat().st_size for p in paths if p.exists() for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file())


def main() -> None:
    from saeembed.documents import ingest
    from saeembed.encode.pipeline import EncodeConfig, encode_corpus
    from saeembed.store import Store

    scratch = Path(tempfile.mkdtemp(prefix="saeembed-tokens-"))
    rows = []
    try:
        for data in sorted((ROOT / "sample_data").glob("*.jsonl")):
            for keep in (False, True):
                path = scratch / f"{data.stem}-{keep}.duckdb"
                with Store(path) as st:
                    ingest(st, data, corpus="c")
                    t0 = time.perf_counter()
                    r = encode_corpus(st, "c", config=EncodeConfig(device="cpu", keep_tokens=keep))
                    seconds = time.perf_counter() - t0
                with Store(path) as st:  # reopen: the WAL is checkpointed, sizes are the files'
                    pass
                shards = path.with_name(path.name + ".shards")
                rows.append({"corpus": data.stem, "keep_tokens": keep, "docs": r.docs_encoded, "tokens": r.tokens,
                             "doc_rows": r.activation_rows, "token_rows": r.token_rows, "seconds": seconds,
                             "store_bytes": _size([path]), "token_bytes": _size(list(shards.rglob("t-*.parquet")))
                             if shards.exists() else 0})
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, python {platform.python_version()}")
    print("| corpus | docs | tokens | doc rows | token rows | token rows / token | token shards MB | MB per 1k docs "
          "| encode s without | encode s with | slowdown |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for without, with_ in zip(rows[::2], rows[1::2]):
        mb = with_["token_bytes"] / 1e6
        print(f"| {with_['corpus']} | {with_['docs']} | {with_['tokens']:,} | {with_['doc_rows']:,} | "
              f"{with_['token_rows']:,} | {with_['token_rows'] / max(with_['tokens'], 1):.1f} | {mb:.2f} | "
              f"{mb / max(with_['docs'], 1) * 1000:.2f} | {without['seconds']:.1f} | {with_['seconds']:.1f} | "
              f"{with_['seconds'] / max(without['seconds'], 1e-9):.2f}× |")
    tok = sum(r["tokens"] for r in rows[1::2])
    byt = sum(r["token_bytes"] for r in rows[1::2])
    print(f"\nall corpora: {byt / max(tok, 1):.1f} bytes of token shard per content token")


if __name__ == "__main__":
    main()
