#!/usr/bin/env bash
# The README's main command: install packages, build the CPU preset, serve the default config in
# the background, wait for grpc.health SERVING, stream one answer with the CLI client and one
# with scripts/client.py, then stop the server with SIGTERM and check that it exits cleanly.
# Environment: MLRA_PORT (default 50051), MLRA_PROMPT, MLRA_MAX_TOKENS (default 32),
# MLRA_SKIP_SETUP=1 / MLRA_SKIP_BUILD=1 to reuse an existing install / build, MLRA_BUILD_DIR
# (default build/cpu, the cpu preset's folder) to run another build's binary.
set -euo pipefail
cd "$(dirname "$0")/.."

port="${MLRA_PORT:-50051}"
# The default config serves the small trained MLRA-4 model (models/default/README.md).
prompt="${MLRA_PROMPT:-Once upon a time}"
max_tokens="${MLRA_MAX_TOKENS:-48}"
# Seeded sampling (the same seed gives the same text from both clients); greedy decoding of a
# model this small falls into loops.
sampling=(--temperature 0.8 --top-p 0.95 --repetition-penalty 1.1 --seed 7)
bin="${MLRA_BUILD_DIR:-build/cpu}/server/mlra-serve"

[ "${MLRA_SKIP_SETUP:-0}" = 1 ] || scripts/setup.sh
[ "${MLRA_SKIP_BUILD:-0}" = 1 ] || scripts/build.sh cpu

log="$(mktemp -t mlra-serve.XXXXXX.log)"
echo "run_default: starting $bin serve --config configs/default.json --port $port (log: $log)"
"$bin" serve --config configs/default.json --port "$port" >"$log" 2>&1 &
server_pid=$!
cleanup() {
  if kill -0 "$server_pid" 2>/dev/null; then kill -TERM "$server_pid" 2>/dev/null || true; fi
}
trap cleanup EXIT

for _ in $(seq 1 600); do
  if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "run_default: the server exited during start-up:" >&2
    cat "$log" >&2
    exit 1
  fi
  if "$bin" client --addr "localhost:$port" --health --timeout-s 1 >/dev/null 2>&1; then break; fi
  sleep 0.5
done
echo "run_default: health: $("$bin" client --addr "localhost:$port" --health)"

echo "run_default: prompt: \"$prompt\""
echo "--- mlra-serve client --stream ---"
"$bin" client --addr "localhost:$port" --prompt "$prompt" --max-tokens "$max_tokens" \
  "${sampling[@]}" --stream
echo "--- scripts/client.py --stream ---"
/usr/bin/python3 scripts/client.py --addr "localhost:$port" --prompt "$prompt" \
  --max-tokens "$max_tokens" "${sampling[@]}" --stream

echo "run_default: stopping the server (SIGTERM)"
kill -TERM "$server_pid"
status=0
wait "$server_pid" || status=$?
trap - EXIT
if [ "$status" -ne 0 ]; then
  echo "run_default: the server exited with status $status:" >&2
  cat "$log" >&2
  exit 1
fi
echo "run_default: server stopped cleanly"
