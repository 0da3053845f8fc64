"""SAE encode step (TopK, 3072 latents, k = 32) on CPU: encode_coo of 16,384 random tokens for several
chunk sizes, against the matmul and the top-k alone. Chunks whose pre-activations fit in cache let
top-k read them from there.

    python benchmarks/sae_encode_chunks.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import encode_throughput as et  # noqa: E402

import saeembed.sae.model as model  # noqa: E402


def best_ms(fn, repeats: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * min(times)


def main() -> None:
    sae = et.random_sae()
    x = torch.randn(16384, 384, generator=torch.Generator().manual_seed(0))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    with torch.inference_mode():
        for elements in (1 << 24, 1 << 22, 1 << 21, 1 << 20, 1 << 19):
            model._MAX_DENSE_ELEMENTS = model._CPU_CHUNK_ELEMENTS = elements
            print(f"chunks of {elements // sae.d_sae:5d} tokens: encode_coo {best_ms(lambda: sae.encode_coo(x)):6.1f} ms")
        pre = sae.pre_activations(x)
        print(f"matmul alone (all tokens): {best_ms(lambda: sae.pre_activations(x)):6.1f} ms")
        print(f"top-k alone (all tokens):  {best_ms(lambda: pre.topk(32, dim=-1, sorted=False)):6.1f} ms")


if __name__ == "__main__":
    main()
