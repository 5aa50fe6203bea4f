#!/usr/bin/env bash
# Runs on the GPU machine (device tool) from the repository root, with the bundle of
# scripts/gpu_check.sh (.device/bundle.tar.xz from scripts/bundle.sh --no-share --tar, or an
# unpacked .device/bundle/bin): the small-batch decode kernels' GPU tests, `mlra-bench gemv` (FMA
# and tensor-core GEMV against cuBLAS on the 2.9B per-rank shapes) and `mlra-bench decode` under
# kernel option sets that switch the small-batch kernels on one at a time, in the same run, so
# the winning defaults can be read off the same-run ratios (k0 = the defaults):
#   k0 {}                                   defaults: FMA GEMV at one row, one-token latent
#                                           kernels over 4+ units
#   k1 gemv_max_rows 8                      + tensor-core GEMV for 2..8 rows
#   k2 k1 + latent_fused_max_tokens 8       + tiled latent kernels for 2..8 tokens
#   k3 k2 + latent_fused_tiled 1            + tiled latent kernels for one token too
#   k4 k2 + weight_prefetch_l2 1            + L2 prefetch before the PDL wait
#   k5 latent_fused_min_units 1             one-token latent kernels over 1+ units (MLRA-4 TP4,
#                                           MLA: one unit per rank)
#   k6 k2 + latent_fused_min_units 1        all of the above but tiled-at-one-token and prefetch
# MLA runs k0, k1, k5, k6 (its one latent unit per rank is fused only from min_units 1).
# Under 9 minutes; logs in $OUT, a summary last. Exits 1 when the tests fail.
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

timeout 150 "$B/mlra_gpu_tests" "[mma],[small_batch],[gemv],[fused],[latent],[pdl]" \
  2>&1 | tee "$OUT/tests.log" | grep -E "^decode vs CPU|^test cases|^All tests|FAILED"
tests_rc=${PIPESTATUS[0]}

timeout 80 "$B/mlra-bench" gemv --rows 1 2 4 8 --tp 1 4 --replays 15 2>&1 | tee "$OUT/gemv.log"

G8='"gemv_max_rows":8'
T8='"latent_fused_max_tokens":8'
U1='"latent_fused_min_units":1'
K0='{}'
K1="{$G8}"
K2="{$G8,$T8}"
K3="{$G8,$T8,\"latent_fused_tiled\":1}"
K4="{$G8,$T8,\"weight_prefetch_l2\":1}"
K5="{$U1}"
K6="{$G8,$T8,$U1}"
# TP4 first (where the new kernels lost): a timeout then costs TP1 points only.
decode() {  # variant, seconds, option sets...
  local v=$1 secs=$2
  shift 2
  timeout "$secs" "$B/mlra-bench" decode --variants "$v" --tp 4 1 --batch 1 8 \
    --context 1024 32768 --iters 10 --fp8-min-context 0 --config-dir configs/2.9b --kernels "$@" 2>&1 \
    | tee "$OUT/decode_$v.log"
}
decode mlra_4 190 "$K0" "$K1" "$K2" "$K3" "$K4" "$K5" "$K6"
decode mla 90 "$K0" "$K1" "$K5" "$K6"

{
  echo "tests exit code: $tests_rc"
  grep -E "^(decode vs CPU|test cases|All tests)" "$OUT/tests.log"
  for v in mlra_4 mla; do
    grep "^kernel options" "$OUT/decode_$v.log"
    sed -n '/same-run comparison/,$p' "$OUT/decode_$v.log"
  done
} | tee "$OUT/summary.txt"
[ "$tests_rc" -eq 0 ]
