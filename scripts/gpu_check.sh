#!/usr/bin/env bash
# Runs on the GPU machine (device tool) from the repository root: unpacks the bundle carried in
# .device/bundle.tar.xz (scripts/bundle.sh --no-share --tar), runs the GPU tests, the GPU
# perplexity of the default model, and the benchmarks; logs go to $OUT, a short summary last.
# Usage: bash scripts/gpu_check.sh [single|multi]
set -uo pipefail
mode="${1:-single}"
: "${OUT:=/tmp/out}"
mkdir -p "$OUT"
tar -C .device -xJf .device/bundle.tar.xz
mkdir -p /work && ln -sfn "$PWD" /work/main  # tests find their data at the build-time path
# The NCCL test starts workers from <exe>/../../server/mlra-serve, as in a build tree.
mkdir -p .device/bundle/bin/server && ln -sfn ../.real/mlra-serve .device/bundle/bin/server/mlra-serve
B="$PWD/.device/bundle/bin"
export MLRA_TOKENIZER_DIR="$PWD/models/assets/gpt2"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader | tee "$OUT/device.txt"
if [ "$mode" = multi ]; then
  timeout 300 "$B/mlra_gpu_tests" "[nccl]" 2>&1 | tee "$OUT/nccl_tests.log" | tail -n 15
  timeout 120 "$B/mlra-serve" generate --model-dir models/default --attention mlra4 --tp 2 \
    --backend cuda --prompt "Once upon a time" --max-tokens 40 -t 0 2>&1 | tee "$OUT/generate_tp2.log" | tail -n 5
  timeout 120 "$B/mlra-serve" generate --model-dir models/default --attention mlra4 --tp 1 \
    --backend cpu --prompt "Once upon a time" --max-tokens 40 -t 0 2>&1 | tail -n 3
  exit 0
fi
timeout 400 "$B/mlra_gpu_tests" 2>&1 | tee "$OUT/gpu_tests.log" | tail -n 25
timeout 200 "$B/mlra-serve" perplexity --model-dir models/default --attention mlra4 \
  --tokens .device/eval/val.bin --context 512 -o backend=cuda -o log_level=warn 2>&1 | tee "$OUT/ppl_cuda.log"
timeout 200 "$B/mlra-bench" attention 2>&1 | tee "$OUT/bench_attention.log" | tail -n 30
timeout 400 "$B/mlra-bench" decode --batch 1 8 64 --context 1024 32768 --iters 10 2>&1 \
  | tee "$OUT/bench_decode.log"
