#!/usr/bin/env bash
# Server threads and resident memory with 100, 1,000 and 10,000 open streams, over gRPC and over
# the OpenAI HTTP API: starts `mlra-serve serve` on the default model (CPU) on loopback ports,
# runs `mlra-bench serve --idle` against it and stops it. Not a test: prints a table.
#   bash scripts/idle_streams.sh [build dir, default build/cpu] [counts, default 100,1000,10000]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build/cpu}
COUNTS=${2:-100,1000,10000}
GRPC_PORT=${GRPC_PORT:-50731}
HTTP_PORT=${HTTP_PORT:-50732}
ulimit -n "$(ulimit -Hn)"
"$BUILD/server/mlra-serve" serve --host 127.0.0.1 --port "$GRPC_PORT" --http-port "$HTTP_PORT" \
  --log-level warn -o max_waiting=20000 -o max_running_seqs=64 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$HTTP_PORT/health" >/dev/null && break
  sleep 0.2
done
echo "idle server: threads $(awk '/^Threads/ {print $2}' /proc/$SERVER/status), RSS $(awk '/^VmRSS/ {print $2/1024 " MB"}' /proc/$SERVER/status)"
"$BUILD/server/mlra-bench" serve --addr "127.0.0.1:$GRPC_PORT" --http "127.0.0.1:$HTTP_PORT" \
  --idle "$COUNTS" --server-pid "$SERVER"
