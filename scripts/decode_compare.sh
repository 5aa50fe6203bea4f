#!/usr/bin/env bash
# Runs on the GPU machine (device tool) from the repository root, with the bundle of
# scripts/gpu_check.sh (.device/bundle.tar.xz from scripts/bundle.sh --no-share --tar, or an
# unpacked .device/bundle/bin): the small-batch decode kernels' GPU tests, then `mlra-bench gemv`
# (FMA and tensor-core GEMV against cuBLAS on the 2.9B per-rank shapes) and `mlra-bench decode`
# under the old kernel options (gemv_max_rows 1: our kernels at one row only) and the new ones
# (gemv_max_rows 8) in the same run. About 8 minutes; logs in $OUT, a summary last.
# Exits 1 when the tests fail.
set -uo pipefail
: "${OUT:=/tmp/out}"
mkdir -p "$OUT"
[ -x .device/bundle/bin/mlra-bench ] || tar -C .device -xJf .device/bundle.tar.xz
# Tests and benchmarks find their data at the build-time source path.
for d in /work/main /work/wt/decode; do
  if [ ! -e "$d" ] || [ -L "$d" ]; then mkdir -p "$(dirname "$d")" && ln -sfn "$PWD" "$d"; fi
done
B="$PWD/.device/bundle/bin"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader | tee "$OUT/device.txt"
date -u +%Y-%m-%dT%H:%MZ | tee -a "$OUT/device.txt"

timeout 120 "$B/mlra_gpu_tests" "[mma],[small_batch],[gemv],[fused],[latent],[pdl]" 2>&1 \
  | tee "$OUT/tests.log" | tail -n 15
tests_rc=${PIPESTATUS[0]}

timeout 110 "$B/mlra-bench" gemv --rows 1 2 4 8 --tp 1 4 --replays 20 2>&1 | tee "$OUT/gemv.log"

timeout 280 "$B/mlra-bench" decode --variants mlra_4 mla --tp 1 4 --batch 1 8 64 \
  --context 1024 32768 --iters 10 --config-dir configs/2.9b \
  --kernels '{"gemv_max_rows":1}' '{"gemv_max_rows":8}' 2>&1 | tee "$OUT/decode.log"

{
  echo "tests exit code: $tests_rc"
  grep -E "^(test cases|All tests)" "$OUT/tests.log"
  sed -n '/same-run comparison/,$p' "$OUT/decode.log"
} | tee "$OUT/summary.txt"
[ "$tests_rc" -eq 0 ]
