#!/usr/bin/env bash
# Runs on the GPU machine (device tool) from the repository root, with the bundle of
# scripts/gpu_check.sh (.device/bundle.tar.xz from scripts/bundle.sh --no-share --tar, or an
# unpacked .device/bundle/bin): the small-batch decode kernels' GPU tests, then `mlra-bench
# decode` (MLRA-4 and MLA; TP 4 and 1; batch 1 and 8; 1K and 32K) under the default-off
# small-batch options, each against the defaults in the same run:
#   k0 {}                    the defaults
#   k1 {"gemv_k_tail":1}     K % 8 != 0 products (the MLP down-projection at TP 2/4/8) on our GEMV
#   k2 {"latent_uk_t":1}     the latent query product of 2..8-token steps on the tensor-core GEMV
#   k3 {"mlp_block":1}       the MLP half of one-token layers as one persistent launch
#   k4 {"attn_block":1}      the front of one-token latent layers (x product .. cache entry, queries)
#                            as one persistent launch
#   k5 {"attn_block":1,"mlp_block":1}  both
# The summary's ratio is k0 time / kN time: above 1, option N is faster. Under 10 minutes; logs in
# $OUT, a summary last. Exits 1 when the tests fail.
set -uo pipefail
: "${OUT:=/tmp/out}"
mkdir -p "$OUT"
[ -x .device/bundle/bin/mlra-bench ] || tar -C .device -xJf .device/bundle.tar.xz
mkdir -p /work && ln -sfn "$PWD" /work/main  # tests find their data at the build-time path
B="$PWD/.device/bundle/bin"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader | tee "$OUT/device.txt"
date -u +%Y-%m-%dT%H:%MZ | tee -a "$OUT/device.txt"

timeout 200 "$B/mlra_gpu_tests" \
  "[mma],[small_batch],[gemv],[fused],[latent],[pdl],[tail],[no_cublas],[mlp_block],[attn_block],[options]" \
  2>&1 | tee "$OUT/tests.log" | grep -E "^decode vs CPU|^test cases|^All tests|FAILED"
tests_rc=${PIPESTATUS[0]}

# TP4 first: a timeout then costs TP1 points only.
decode() {  # variant, seconds
  timeout "$2" "$B/mlra-bench" decode --variants "$1" --tp 4 1 --batch 1 8 \
    --context 1024 32768 --iters 10 --fp8-min-context 0 --config-dir configs/2.9b \
    --kernels '{}' '{"gemv_k_tail":1}' '{"latent_uk_t":1}' '{"mlp_block":1}' \
    '{"attn_block":1}' '{"attn_block":1,"mlp_block":1}' 2>&1 |
    tee "$OUT/decode_$1.log"
}
decode mlra_4 190
decode mla 170

{
  echo "tests exit code: $tests_rc"
  grep -E "^(decode vs CPU|test cases|All tests)" "$OUT/tests.log"
  for v in mlra_4 mla; do
    grep "^kernel options" "$OUT/decode_$v.log"
    sed -n '/same-run comparison/,$p' "$OUT/decode_$v.log"
  done
} | tee "$OUT/summary.txt"
[ "$tests_rc" -eq 0 ]
