#!/usr/bin/env bash
# Runs on the GPU machine (device tool) from the repository root: unpacks the bundle carried in
# .device/bundle.tar.xz (scripts/bundle.sh --no-share --tar), runs the GPU tests, the GPU
# perplexity of the default model, and the benchmarks; logs go to $OUT, a short summary last.
# Usage: bash scripts/gpu_check.sh [single|multi|tp-shared|serve|serve-shared]
#   tp-shared: the GPU tests of TP2/4/8 with every rank on GPU 0 ([tp_shared]; single skips them).
#   serve: a random-weight 2.9B MLRA-4 checkpoint in the release format (make_release_checkpoint.py),
#   served at TP=2 on CUDA, and the load generator at 1,000 concurrent streams against it.
#   serve-shared: the same checkpoint at TP=4 with every rank on GPU 0 (tp_devices [0,0,0,0]:
#   host-staged all-reduce), the load (1,000 streams, 10% cancels, cache free afterwards), then
#   the load again with rank 2's worker killed mid-run: every stream must end with one terminal
#   status, health must leave SERVING, the server must exit with status 3 (engine failure) and
#   leave no worker behind. Exits 1 on a failed check.
#   METRICS_PORT=N also serves /metrics and has the load generator scrape it.
set -uo pipefail
mode="${1:-single}"
: "${OUT:=/tmp/out}"
mkdir -p "$OUT"
tar -C .device -xJf .device/bundle.tar.xz
mkdir -p /work && ln -sfn "$PWD" /work/main  # tests find their data at the build-time path
# The NCCL test starts workers from <exe>/../../server/mlra-serve, as in a build tree.
mkdir -p .device/bundle/bin/server && ln -sfn ../.real/mlra-serve .device/bundle/bin/server/mlra-serve
# The binaries in .device/bundle/bin/.real find the GPT-2 tokenizer four folders up, in this
# checkout's models/assets/gpt2 (default_tokenizer_dir).
B="$PWD/.device/bundle/bin"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader | tee "$OUT/device.txt"
port=50151
ck=/tmp/ckpt/mlra4

write_checkpoint() {
  python3 scripts/make_release_checkpoint.py --config configs/2.9b/mlra_4/config.json --variant mlra4 \
    --out "$ck" --dtype "${CKPT_DTYPE:-float32}" 2>&1 | tee "$OUT/make_checkpoint.log"
}

# start_server TP [--set key=value ...]: starts mlra-serve in the background (pid in $pid) and
# waits until it serves or dies.
start_server() {
  local tp=$1
  shift
  local start
  start=$(date +%s%N)
  "$B/mlra-serve" serve --model-dir "$ck" --attention mlra4 --backend cuda --tp "$tp" --port $port ${METRICS_PORT:+--metrics-port $METRICS_PORT} \
    --set gpu_memory_fraction=0.85 --set max_running_seqs=256 \
    --set max_step_tokens=4096 --set max_waiting=4096 --set max_context=2048 "$@" \
    --log-level info > "$OUT/serve.log" 2>&1 &
  pid=$!
  for i in $(seq 600); do
    if grep -q "serving mlra.v1.Mlra" "$OUT/serve.log"; then break; fi
    if ! kill -0 $pid 2>/dev/null; then break; fi
    sleep 0.5
  done
  echo "server up after $(( ($(date +%s%N) - start) / 1000000 )) ms" | tee "$OUT/load_time.txt"
  tail -n 8 "$OUT/serve.log"
  nvidia-smi --query-gpu=index,memory.used,memory.total --format=csv | tee "$OUT/memory.txt"
}

# load_run LOG [extra mlra-bench flags]: the load generator at $STREAMS concurrent streams.
load_run() {
  local log=$1
  shift
  timeout 450 "$B/mlra-bench" serve --addr localhost:$port ${METRICS_PORT:+--metrics localhost:$METRICS_PORT} \
    --concurrency "${STREAMS:-1000}" --requests "${REQUESTS:-2000}" --min-prompt 16 \
    --max-prompt "${MAX_PROMPT:-512}" --min-output 16 --max-output "${MAX_OUTPUT:-256}" --cancel 0.1 \
    "$@" > "$log" 2>&1
}

# wait_gone PID SECONDS: returns once PID has exited or SECONDS have passed.
wait_gone() {
  local i
  for i in $(seq $(($2 * 2))); do
    kill -0 "$1" 2>/dev/null || return 0
    sleep 0.5
  done
}

health() {
  timeout 10 "$B/mlra-serve" client --addr localhost:$port --health --timeout-s 5 2>&1 | tail -n 1
}

if [ "$mode" = serve ]; then
  write_checkpoint
  start_server "${TP:-2}"
  load_run "$OUT/load.log" --deadline-s 360
  tail -n 40 "$OUT/load.log"
  kill -TERM $pid
  wait $pid
  echo "server exit code $?" | tee -a "$OUT/load.log"
  grep -c "request " "$OUT/serve.log" > "$OUT/request_log_lines.txt" || true
  exit 0
fi
if [ "$mode" = serve-shared ]; then
  : "${REQUESTS:=1000}"
  # Four worker processes time-slice one GPU and all-reduce through the host, far slower than
  # one process per GPU (README.md, Benchmarks): the full-size load (prompts to 512, outputs to
  # 256 tokens) outlasts the deadline there; this shape keeps 1,000 concurrent streams in budget.
  : "${MAX_PROMPT:=128}" "${MAX_OUTPUT:=32}"
  summary="$OUT/summary.txt"
  : > "$summary"
  verdict() { echo "$1: $2" | tee -a "$summary"; [ "$2" = PASS ] || failed=1; }
  failed=0
  write_checkpoint
  start_server 4 --set 'tp_devices=[0,0,0,0]'
  grep -E "tp rank|host-staged" "$OUT/serve.log" | tee "$OUT/ranks.txt"
  load_run "$OUT/load.log" --deadline-s 360
  rc=$?
  tail -n 20 "$OUT/load.log"
  verdict "load at TP4 on one GPU (one terminal status each, cache free)" "$([ $rc -eq 0 ] && echo PASS || echo "FAIL (mlra-bench exit $rc)")"
  h=$(health)
  verdict "health before the fault ($h)" "$([ "$h" = SERVING ] && echo PASS || echo FAIL)"
  # Streams cut short by the failure end INTERNAL (in flight), UNAVAILABLE (refused, or the
  # server gone) or CANCELLED (accepted by gRPC, not yet handled, at shutdown); each must still
  # end, once.
  load_run "$OUT/load_kill.log" --deadline-s 120 --tolerate INTERNAL --tolerate UNAVAILABLE \
    --tolerate CANCELLED --no-cache-check &
  load_pid=$!
  sleep "${KILL_AFTER_S:-15}"
  # Health as seen from outside, every 0.1 s until the server is gone.
  ( while kill -0 $pid 2>/dev/null; do echo "$(date +%T.%N) $(health)"; sleep 0.1; done ) \
    > "$OUT/health.log" 2>&1 &
  poll_pid=$!
  victim=$(pgrep -P $pid -f "worker --rank 2 ")
  echo "killing rank 2 (pid $victim) at $(date +%T.%N)" | tee "$OUT/fault.txt"
  kill -KILL $victim
  wait $load_pid
  rc=$?
  tail -n 20 "$OUT/load_kill.log"
  verdict "load with a killed worker (every stream ended once, none hung)" "$([ $rc -eq 0 ] && echo PASS || echo "FAIL (mlra-bench exit $rc)")"
  wait_gone $pid 60
  if kill -0 $pid 2>/dev/null; then
    echo "server still running 60 s after the worker failure: sending SIGTERM" | tee -a "$OUT/fault.txt"
    kill -TERM $pid
  fi
  wait_gone $pid 60
  if kill -0 $pid 2>/dev/null; then
    echo "server still running 60 s after SIGTERM: hung, sending SIGKILL" | tee -a "$OUT/fault.txt"
    kill -KILL $pid
  fi
  wait $pid
  code=$?
  wait $poll_pid
  echo "server exit code $code" | tee -a "$OUT/fault.txt"
  tail -n 15 "$OUT/serve.log"
  seen=$(grep -c " NOT_SERVING$" "$OUT/health.log")
  last=$(tail -n 1 "$OUT/health.log")
  echo "health polls: $(wc -l < "$OUT/health.log"), NOT_SERVING in $seen, last: $last" | tee -a "$OUT/fault.txt"
  verdict "health leaves SERVING after the kill (NOT_SERVING polled $seen times)" "$(tail -n 1 "$OUT/health.log" | grep -q " SERVING$" && echo FAIL || echo PASS)"
  left=$(pgrep -c -f "/proc/self/exe worker --rank")
  verdict "no worker left after the server exited ($left)" "$([ "$left" = 0 ] && echo PASS || echo FAIL)"
  # server/README.md, Failures: an engine failure while serving ends the process with status 3.
  verdict "server exits with status 3 after the worker failure (exit $code)" "$([ $code -eq 3 ] && echo PASS || echo FAIL)"
  cat "$summary"
  exit $failed
fi
if [ "$mode" = tp-shared ]; then
  timeout 580 "$B/mlra_gpu_tests" "[tp_shared]" 2>&1 | tee "$OUT/tp_shared_tests.log" | tail -n 15
  exit "${PIPESTATUS[0]}"
fi
if [ "$mode" = multi ]; then
  timeout 300 "$B/mlra_gpu_tests" "[nccl]" 2>&1 | tee "$OUT/nccl_tests.log" | tail -n 15
  timeout 120 "$B/mlra-serve" generate --model-dir models/default --attention mlra4 --tp 2 \
    --backend cuda --prompt "Once upon a time" --max-tokens 40 -t 0 2>&1 | tee "$OUT/generate_tp2.log" | tail -n 5
  timeout 120 "$B/mlra-serve" generate --model-dir models/default --attention mlra4 --tp 1 \
    --backend cpu --prompt "Once upon a time" --max-tokens 40 -t 0 2>&1 | tail -n 3
  exit 0
fi
timeout 400 "$B/mlra_gpu_tests" "~[tp_shared]" 2>&1 | tee "$OUT/gpu_tests.log" | tail -n 25
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
