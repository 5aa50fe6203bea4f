#!/usr/bin/env bash
# The FP8 cache on the GPU machine (device tool), from the repository root with the bundle of
# scripts/gpu_check.sh (.device/bundle.tar.xz): the [fp8] GPU tests, the attention benchmark
# with the bf16 and the FP8 cache in one run, kv-cache-compare on CUDA (perplexity on held-out
# text and greedy agreement over 256 tokens for 20 prompts) for the default model at TP 1, 2 and
# 4 (ranks sharing GPU 0) and, when .device/models/mla holds the MLA sibling, for it at TP 1 and
# as TPLA at TP 2 and 4, then the decode benchmark's FP8 rows at 32K. Logs go to $OUT, one per
# step; summary.txt lists each check. Fits in 9 minutes (every step has a timeout; the decode
# benchmark gets what is left of BUDGET_S, default 530 s, skipped under 60).
# Usage: OUT=/tmp/out bash scripts/fp8_check.sh
set -uo pipefail
: "${OUT:=/tmp/out}"
: "${BUDGET_S:=530}"
mkdir -p "$OUT"
tar -C .device -xJf .device/bundle.tar.xz
mkdir -p /work && ln -sfn "$PWD" /work/main  # tests find their data at the build-time path
mkdir -p .device/bundle/bin/server && ln -sfn ../.real/mlra-serve .device/bundle/bin/server/mlra-serve
# The binaries in .device/bundle/bin/.real find the GPT-2 tokenizer four folders up, in this
# checkout's models/assets/gpt2 (default_tokenizer_dir).
B="$PWD/.device/bundle/bin"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader | tee "$OUT/device.txt"
summary="$OUT/summary.txt"
: > "$summary"
note() { echo "$*" | tee -a "$summary"; }
start=$(date +%s)
elapsed() { echo "$(( $(date +%s) - start )) s"; }

timeout 140 "$B/mlra_gpu_tests" "[fp8]" 2>&1 | tee "$OUT/fp8_gpu_tests.log" | tail -n 12
note "[fp8] GPU tests: exit ${PIPESTATUS[0]} ($(tail -n 2 "$OUT/fp8_gpu_tests.log" | tr '\n' ' ')) at $(elapsed)"

# bf16 against FP8 at 64K and 1M, batch 16 and 64 (bf16/fp8 column: the speedup).
timeout 100 "$B/mlra-bench" attention --contexts-k 64 1024 --batches 16 64 --max-cache-gb 24 \
  --replays 20 2>&1 | tee "$OUT/bench_attention_fp8.log" | tail -n 45
note "attention benchmark: exit ${PIPESTATUS[0]} at $(elapsed); FP8 rows (%copy, bf16/fp8 last):"
grep "fp8_e4m3" "$OUT/bench_attention_fp8.log" | tee -a "$summary"

# compare NAME TIMEOUT ARGS...: kv-cache-compare on CUDA; PASS when perplexity moves by <= +1%.
compare() {
  local name=$1 limit=$2
  shift 2
  timeout "$limit" "$B/mlra-serve" kv-cache-compare --text tests/data/heldout/austen.txt \
    -o backend=cuda -o log_level=warn "$@" > "$OUT/compare_$name.log" 2>&1
  local rc=$? line pct
  line=$(grep '"ppl_change_pct"' "$OUT/compare_$name.log" | tail -n 1)
  pct=$(sed -n 's/.*"ppl_change_pct": \([-0-9.]*\).*/\1/p' <<< "$line")
  if [ $rc -ne 0 ] || [ -z "$pct" ]; then
    note "kv-cache-compare $name: FAIL (exit $rc, $(tail -n 1 "$OUT/compare_$name.log"))"
  else
    note "kv-cache-compare $name: $(awk -v p="$pct" 'BEGIN { print (p <= 1.0 ? "PASS" : "FAIL") }') $line"
  fi
}
compare mlra4_tp1 45 --model-dir models/default --attention mlra4
compare mlra4_tp2 60 --model-dir models/default --attention mlra4 -o tp=2 -o 'tp_devices=[0,0]'
compare mlra4_tp4 60 --model-dir models/default --attention mlra4 -o tp=4 -o 'tp_devices=[0,0,0,0]'
if [ -f .device/models/mla/config.json ]; then
  compare mla_tp1 45 --model-dir .device/models/mla --attention mla
  compare tpla_tp2 60 --model-dir .device/models/mla --attention mla -o tp=2 \
    -o 'tp_devices=[0,0]' -o mla_tp_mode=tpla -o tpla_transform=random -o tpla_pd_separation=false
  compare tpla_tp4 60 --model-dir .device/models/mla --attention mla -o tp=4 \
    -o 'tp_devices=[0,0,0,0]' -o mla_tp_mode=tpla -o tpla_transform=random -o tpla_pd_separation=false
else
  note "MLA sibling: not in .device/models/mla, its kv-cache-compare skipped"
fi
# The decode step with the FP8 cache at 32K (k1; the same-run table's ratio: bf16 over FP8),
# last: it builds 2.9B models, the slowest step.
left=$(( BUDGET_S - ($(date +%s) - start) ))
if [ $left -ge 60 ]; then
  timeout $(( left < 120 ? left : 120 )) "$B/mlra-bench" decode --variants mlra_4 mla --tp 1 4 \
    --batch 8 32 --context 32768 --iters 10 --max-cache-gb 40 2>&1 \
    | tee "$OUT/bench_decode_fp8.log" | tail -n 12
  note "decode benchmark: exit ${PIPESTATUS[0]} at $(elapsed); k1 is the FP8 cache (ratio: bf16 / FP8):"
  sed -n '/same-run comparison/,/^$/p' "$OUT/bench_decode_fp8.log" | tee -a "$summary"
else
  note "decode benchmark: skipped, $left s left of ${BUDGET_S} s"
fi
note "done at $(elapsed)"
cat "$summary"
