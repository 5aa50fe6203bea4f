#!/usr/bin/env bash
# CI test of the HTTP API with stock clients: starts `mlra-serve serve` (default CPU model, chat
# template tests/data/chat_template.json, loopback, free ports), checks raw SSE
# framing and malformed input with curl, then runs the official openai npm client's tests
# (openai_client.test.mjs; `npm ci` from the pinned package-lock.json when node_modules is
# missing). Usage: run.sh path/to/mlra-serve
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
SERVE="$1"
LOG="$(mktemp)"
# http_port 0 means off: ask the kernel for a free port to give it.
HTTP_PORT=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$SERVE" serve --config "$ROOT/configs/default.json" --host 127.0.0.1 --port 0 --http-port "$HTTP_PORT" \
  --set "chat_template=$ROOT/tests/data/chat_template.json" --log-level info 2>"$LOG" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true; rm -f "$LOG"' EXIT
URL=""
for _ in $(seq 300); do
  URL=$(grep -o 'http://127.0.0.1:[0-9]*/v1' "$LOG" | head -1 || true)
  [ -n "$URL" ] && break
  kill -0 $SERVER 2>/dev/null || { cat "$LOG"; echo "run.sh: the server exited"; exit 1; }
  sleep 0.1
done
[ -n "$URL" ] || { cat "$LOG"; echo "run.sh: no HTTP listener"; exit 1; }
BASE="${URL%/v1}"
fail() { echo "run.sh: FAIL: $*"; exit 1; }

# Raw SSE framing: "data: {json}" events separated by blank lines, ending "data: [DONE]".
SSE=$(curl -sN "$URL/completions" -H 'Content-Type: application/json' \
  -d '{"prompt": "Once upon a time", "max_tokens": 6, "stream": true, "temperature": 0}')
printf '%s\n' "$SSE" | awk 'NF == 0 {next} !/^data: / {bad = 1} END {exit bad}' \
  || fail "an SSE line that is not 'data: ': $SSE"
[ "$(printf '%s\n' "$SSE" | grep -c '^data: {')" -ge 2 ] || fail "too few SSE events: $SSE"
[ "$(printf '%s\n' "$SSE" | grep -v '^$' | tail -1)" = "data: [DONE]" ] || fail "no final [DONE]: $SSE"
[[ "$SSE" == *$'}\n\ndata: '* ]] || fail "SSE events are not separated by blank lines"
HEADERS=$(curl -sN -D - -o /dev/null "$URL/completions" -H 'Content-Type: application/json' \
  -d '{"prompt": "a", "max_tokens": 2, "stream": true}')
grep -qi '^content-type: text/event-stream' <<<"$HEADERS" || fail "SSE content type: $HEADERS"
grep -qi '^transfer-encoding: chunked' <<<"$HEADERS" || fail "SSE not chunked: $HEADERS"
# Malformed JSON and HTTP.
CODE=$(curl -s -o /dev/null -w '%{http_code}' "$URL/completions" -H 'Content-Type: application/json' -d '{"prompt": ')
[ "$CODE" = 400 ] || fail "malformed JSON answered $CODE"
CODE=$(curl -s -o /dev/null -w '%{http_code}' -X PUT "$URL/completions")
[ "$CODE" = 405 ] || fail "PUT answered $CODE"
CODE=$(curl -s -o /dev/null -w '%{http_code}' "$BASE/health")
[ "$CODE" = 200 ] || fail "/health answered $CODE"
METRICS=$(curl -s "$BASE/metrics")
grep -q 'mlra:requests_total{.*protocol="http"' <<<"$METRICS" || fail "/metrics lacks protocol=\"http\""
echo "run.sh: curl checks passed"

cd "$HERE"
if [ ! -d node_modules/openai ]; then npm ci --no-audit --no-fund >/dev/null; fi
MLRA_BASE_URL="$URL" node --test openai_client.test.mjs
