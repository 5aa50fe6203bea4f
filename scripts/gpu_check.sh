#!/usr/bin/env bash
# Runs on the GPU machine (device tool) from the repository root: unpacks the bundle carried in
# .device/bundle.tar.xz (scripts/bundle.sh --no-share --tar), runs the GPU tests, the GPU
# perplexity of the default model, and the benchmarks; logs go to $OUT, a short summary last.
# Usage: bash scripts/gpu_check.sh [single|multi|serve]
#   serve: a random-weight 2.9B MLRA-4 checkpoint in the release format (make_release_checkpoint.py),
#   served at TP=2 on CUDA, and the load generator at 1,000 concurrent streams against it.
#   METRICS_PORT=N also serves /metrics and has the load generator scrape it.
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
if [ "$mode" = serve ]; then
  ck=/tmp/ckpt/mlra4
  python3 scripts/make_release_checkpoint.py --config configs/2.9b/mlra_4/config.json --variant mlra4 \
    --out "$ck" --dtype "${CKPT_DTYPE:-float32}" 2>&1 | tee "$OUT/make_checkpoint.log"
  port=50151
  start=$(date +%s%N)
  "$B/mlra-serve" serve --model-dir "$ck" --attention mlra4 --backend cuda --tp "${TP:-2}" --port $port ${METRICS_PORT:+--metrics-port $METRICS_PORT} \
    --set gpu_memory_fraction=0.85 --set max_running_seqs=256 \
    --set max_step_tokens=4096 --set max_waiting=4096 --set max_context=2048 \
    --log-level info > "$OUT/serve.log" 2>&1 &
  pid=$!
  for i in $(seq 600); do
    if grep -q "serving mlra.v1.Mlra" "$OUT/serve.log"; then break; fi
    if ! kill -0 $pid 2>/dev/null; then break; fi
    sleep 0.5
  done
  echo "server up after $(( ($(date +%s%N) - start) / 1000000 )) ms" | tee "$OUT/load_time.txt"
  tail -n 5 "$OUT/serve.log"
  nvidia-smi --query-gpu=index,memory.used,memory.total --format=csv | tee "$OUT/memory.txt"
  timeout 400 "$B/mlra-bench" serve --addr localhost:$port ${METRICS_PORT:+--metrics localhost:$METRICS_PORT} \
    --concurrency "${STREAMS:-1000}" --requests "${REQUESTS:-2000}" --min-prompt 16 --max-prompt 512 \
    --min-output 16 --max-output 256 --cancel 0.1 --deadline-s 360 2>&1 | tee "$OUT/load.log" | tail -n 40
  kill -TERM $pid
  wait $pid
  echo "server exit code $?" | tee -a "$OUT/load.log"
  grep -c "request " "$OUT/serve.log" > "$OUT/request_log_lines.txt" || true
  exit 0
fi
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
# The FP8 cache against the bf16 one: perplexity on held-out text and greedy agreement.
timeout 600 "$B/mlra-serve" kv-cache-compare --model-dir models/default --attention mlra4 \
  --text tests/data/heldout/austen.txt -o backend=cuda -o log_level=warn 2>&1 \
  | tee "$OUT/kv_cache_compare_cuda.log"
timeout 200 "$B/mlra-bench" attention --kv-cache-dtype auto 2>&1 | tee "$OUT/bench_attention.log" | tail -n 30
# Both cache encodings in one run (the FP8 cache on the generic kernel).
timeout 300 "$B/mlra-bench" attention --contexts-k 64 128 --batches 16 64 2>&1 \
  | tee "$OUT/bench_attention_fp8.log" | tail -n 30
# The kept kernel option's case (kernels/README.md): the K/V split at two CTAs per SM.
timeout 200 "$B/mlra-bench" attention --variants "MHA TP8" --kernels '{"kv_split_per_sm":2}' 2>&1 \
  | tee "$OUT/bench_attention_kv_split2.log" | tail -n 25
# The decode grid: batch 1..256 x context 1K..128K (points whose cache exceeds 60 GB skipped: fits an H100).
timeout 500 "$B/mlra-bench" decode --batch 1 8 64 256 --context 1024 32768 131072 --iters 10 \
  --max-cache-gb 60 2>&1 \
  | tee "$OUT/bench_decode.log"
# Prefill: MLA / GLA-2 in the absorbed and the expanded form (same run).
timeout 300 "$B/mlra-bench" prefill --variants mla gla_2 --latent-prefill absorbed expanded \
  --tokens 8192 32768 --iters 2 2>&1 | tee "$OUT/bench_prefill_forms.log"
# Prefill: attention vs matrix products.
timeout 300 "$B/mlra-bench" prefill --variants mlra_4 mla gla_2 gqa --tokens 2048 8192 32768 \
  --iters 2 2>&1 | tee "$OUT/bench_prefill.log"
