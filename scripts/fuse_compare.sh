#!/usr/bin/env bash
# Runs on the GPU machine (device tool) from the repository root, with the bundle of
# scripts/gpu_check.sh (.device/bundle.tar.xz from scripts/bundle.sh --no-share --tar, or an
# unpacked .device/bundle/bin): the fused-norm GPU tests ([fused_norm]: the kernel against a
# double reference and bit for bit against the composed ops, whole decode steps against the CPU
# and the default path) and `mlra-bench decode` with and without the norms fused into the GEMV
# prologue, in the same run, so the ratio is read off the same-run table (k0 = the defaults):
#   k0 {}                       norm kernels of their own (add_rms_norm, q norm)
#   k1 gemv_fused_norm 1        one-row steps: ln1 into [W_qa; W_kv], the q norm into W_qb_nope
#   k2 gemv_fused_norm 3        and ln2 into the SwiGLU GEMV (its many small blocks each norm)
# Under 4 minutes; logs in $OUT, a summary last. Exits 1 when the tests fail.
set -uo pipefail
: "${OUT:=/tmp/out}"
mkdir -p "$OUT"
[ -x .device/bundle/bin/mlra-bench ] || tar -C .device -xJf .device/bundle.tar.xz
# Tests and benchmarks find their data at the build-time source path.
for d in /work/main /work/wt/fuse; do
  if [ ! -e "$d" ] || [ -L "$d" ]; then mkdir -p "$(dirname "$d")" && ln -sfn "$PWD" "$d"; fi
done
B="$PWD/.device/bundle/bin"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader | tee "$OUT/device.txt"
date -u +%Y-%m-%dT%H:%MZ | tee -a "$OUT/device.txt"

timeout 80 "$B/mlra_gpu_tests" "[fused_norm]" 2>&1 | tee "$OUT/tests.log" |
  grep -E "^test cases|^All tests|FAILED"
tests_rc=${PIPESTATUS[0]}

K0='{}'
K1='{"gemv_fused_norm":1}'
K2='{"gemv_fused_norm":3}'
# TP4 first: a timeout then costs TP1 points only.
decode() {  # variant, seconds
  timeout "$2" "$B/mlra-bench" decode --variants "$1" --tp 4 1 --batch 1 8 \
    --context 1024 32768 --iters 10 --fp8-min-context 0 --config-dir configs/2.9b \
    --kernels "$K0" "$K1" "$K2" 2>&1 | tee "$OUT/decode_$1.log"
}
decode mlra_4 80
decode mla 70

{
  echo "tests exit code: $tests_rc"
  grep -E "^(test cases|All tests)" "$OUT/tests.log"
  for v in mlra_4 mla; do
    grep "^kernel options" "$OUT/decode_$v.log"
    sed -n '/same-run comparison/,$p' "$OUT/decode_$v.log"
  done
} | tee "$OUT/summary.txt"
[ "$tests_rc" -eq 0 ]
