#!/usr/bin/env bash
# Soak test of the CPU server: for --duration seconds, 200 concurrent streams of mixed traffic --
# 180 valid Generate streams from `mlra-bench serve` (20% cancelled by the client after a random
# number of chunks, each run checking every stream's contract) and 20 clients sending invalid
# requests (bad sampling values, out-of-vocabulary ids, over-long and empty prompts, undecodable
# bytes, unknown methods, bad Detokenize ids). Every 10 s the server's RSS, thread count and cache
# pages (from /metrics) are sampled into a table. Passes when the server stayed up, every bench run
# kept the contract, every invalid request got an error status (none hung), all pages are free at
# the end, and RSS and threads are flat: the mean of the last three samples under load within 10%
# (+32 MB, +8 threads) of the mean of samples 2-4.
#
#   scripts/soak.sh [--duration 600] [--model-dir DIR --attention V | --tiny] [--build build/cpu]
# The 60 s CI version runs with --tiny (tests/test_soak.cpp).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DURATION=600
BUILD="$ROOT/build/cpu"
MODEL=(--config "$ROOT/configs/default.json")
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION="$2"; shift 2 ;;
    --build) BUILD="$2"; shift 2 ;;
    --model-dir) MODEL+=(--model-dir "$2"); shift 2 ;;
    --attention) MODEL+=(--attention "$2"); shift 2 ;;
    --tiny) MODEL+=(--model-dir "$ROOT/tests/data/tiny/mlra4" --attention mlra4 --set page_size=16
                    --set num_pages=2048); shift ;;
    *) echo "soak.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
for b in mlra-serve mlra-bench; do
  [ -x "$BUILD/server/$b" ] || { echo "soak.sh: $BUILD/server/$b not built" >&2; exit 2; }
done
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
METRICS=$(free_port)
WORK=$(mktemp -d /tmp/mlra_soak.XXXXXX)
# A 32 MiB cache (--tiny: 2048 pages, 9 MB): every page is written within the first seconds, so RSS is flat from then on
# unless something leaks (a larger cache's pages are first touched over minutes and would read
# as growth). More streams than it holds also keeps preemption busy.
"$BUILD/server/mlra-serve" serve "${MODEL[@]}" --host 127.0.0.1 --port "$PORT" \
  --metrics-port "$METRICS" --set max_running_seqs=256 --set cache_memory_bytes=33554432 \
  --log-level warn >"$WORK/serve.log" 2>&1 &
SERVER=$!
cleanup() {
  kill "$SERVER" 2>/dev/null || true
  wait "$SERVER" 2>/dev/null || true
}
trap cleanup EXIT

# Valid and cancelled traffic: back-to-back bench runs until the time is up.
(
  end=$((SECONDS + DURATION))
  run=0
  until /usr/bin/python3 - "$PORT" <<'EOF'
import grpc, sys
ch = grpc.insecure_channel("127.0.0.1:" + sys.argv[1])
try:
    grpc.channel_ready_future(ch).result(timeout=1)
    raw = ch.unary_unary("/grpc.health.v1.Health/Check", request_serializer=lambda b: b,
                         response_deserializer=lambda b: b)(b"", timeout=2)
    sys.exit(0 if raw == b"\x08\x01" else 1)
except Exception:
    sys.exit(1)
EOF
  do sleep 0.5; done
  while [ $SECONDS -lt $end ]; do
    run=$((run + 1))
    if ! "$BUILD/server/mlra-bench" serve --addr "127.0.0.1:$PORT" -n 180 --requests 720 \
        --cancel 0.2 --min-prompt 4 --max-prompt 48 --min-output 4 --max-output 48 \
        --seed "$run" --deadline-s 300 >"$WORK/bench_$run.log" 2>&1; then
      echo "bench run $run failed" >>"$WORK/failures"
      tail -n 30 "$WORK/bench_$run.log" >>"$WORK/failures"
    fi
  done
  echo "$run" >"$WORK/bench_runs"
) &
BENCH=$!

/usr/bin/python3 - "$PORT" "$METRICS" "$SERVER" "$DURATION" "$WORK" <<'EOF'
"""Invalid traffic (20 threads), the 10 s sampler, and the verdict."""
import struct, sys, threading, time, urllib.request
import grpc

port, metrics_port, pid, duration, work = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]

def varint(x):
    out = bytearray()
    while True:
        b, x = x & 0x7F, x >> 7
        out.append(b | (0x80 if x else 0))
        if not x:
            return bytes(out)

def field(n, payload):  # length-delimited field
    return varint(n << 3 | 2) + varint(len(payload)) + payload

def ids(values):  # GenerateRequest.token_ids (TokenIds, packed)
    return field(3, field(1, b"".join(varint(v & 0xFFFFFFFFFFFFFFFF) for v in values)))

def sampling(raw):
    return field(4, raw)

def f32(n, v):  # float field
    return varint(n << 3 | 5) + struct.pack("<f", v)

GEN = "/mlra.v1.Mlra/Generate"
INVALID = [  # (name, method, request bytes)
    ("empty prompt", GEN, b""),
    ("temperature -1", GEN, ids([1, 2, 3]) + sampling(f32(2, -1.0))),
    ("top_p 0", GEN, ids([1, 2, 3]) + sampling(f32(4, 0.0))),
    ("out-of-vocab id", GEN, ids([1, 999999])),
    ("negative id", GEN, ids([1, -7])),
    ("prompt past the context", GEN, ids([5] * 100000)),
    ("17 stop strings", GEN, ids([1]) + sampling(b"".join(field(10, b"x") for _ in range(17)))),
    ("logprobs 21", GEN, ids([1]) + sampling(varint(13 << 3) + varint(21))),
    ("undecodable bytes", GEN, b"\xff\xff\xff\xff\x0f"),
    ("unknown method", "/mlra.v1.Mlra/Nope", b""),
    ("Detokenize bad id", "/mlra.v1.Mlra/Detokenize", field(1, varint(2**32 - 3))),
]

stop = threading.Event()
codes, hung, wrongly_ok = {}, [], []
lock = threading.Lock()

def invalid_client(k):
    ch = grpc.insecure_channel("127.0.0.1:" + port)
    calls = {m: (ch.unary_stream if m == GEN else ch.unary_unary)(
        m, request_serializer=lambda b: b, response_deserializer=lambda b: b) for _, m, _ in INVALID}
    i = k
    while not stop.is_set():
        name, method, request = INVALID[i % len(INVALID)]
        i += 1
        try:
            r = calls[method](request, timeout=30)
            if method == GEN:
                list(r)
            code = "OK"
        except grpc.RpcError as e:
            code = e.code().name
        with lock:
            codes[(name, code)] = codes.get((name, code), 0) + 1
            if code == "DEADLINE_EXCEEDED":
                hung.append(name)
            if code == "OK":
                wrongly_ok.append(name)

def proc_status():
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            out[key] = value.split()[0] if value.split() else ""
    return int(out["VmRSS"]) // 1024, int(out["Threads"])

def scrape():
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    values = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name = line.split("{")[0].split(" ")[0]
        values[name] = values.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return values

rows = []
def sample(t):
    rss, threads = proc_status()
    m = scrape()
    total, used = int(m.get("mlra:cache_pages_total", 0)), int(m.get("mlra:cache_pages_used", 0))
    row = (t, rss, threads, used, int(m.get("mlra:cache_pages_cached", 0)), total - used,
           int(m.get("mlra:num_requests_running", 0)), int(m.get("mlra:num_requests_waiting", 0)))
    rows.append(row)
    print("%6d %8d %8d %10d %12d %10d %8d %8d" % row, flush=True)

# Wait for the server, then run.
for _ in range(600):
    try:
        scrape()
        break
    except Exception:
        time.sleep(0.5)
print("%6s %8s %8s %10s %12s %10s %8s %8s" % ("t_s", "rss_mb", "threads", "pages_used",
      "pages_cached", "pages_free", "running", "waiting"), flush=True)
threads = [threading.Thread(target=invalid_client, args=(k,)) for k in range(20)]
start = time.time()
for th in threads:
    th.start()
next_sample = 0
while time.time() - start < duration:
    if time.time() - start >= next_sample:
        sample(int(time.time() - start))
        next_sample += 10
    time.sleep(0.2)
sample(int(time.time() - start))
stop.set()
for th in threads:
    th.join()
load_rows = list(rows)
# Let the last bench run finish, then sample the idle server.
for _ in range(900):
    try:
        open(f"{work}/bench_runs").close()
        break
    except FileNotFoundError:
        time.sleep(1)
time.sleep(3)
sample(int(time.time() - start))
final = rows[-1]

problems = []
def mean(xs):
    return sum(xs) / len(xs)
if len(load_rows) >= 6:
    early, late = load_rows[1:4], load_rows[-3:]
    rss_e, rss_l = mean([r[1] for r in early]), mean([r[1] for r in late])
    thr_e, thr_l = mean([r[2] for r in early]), mean([r[2] for r in late])
    print(f"RSS {rss_e:.0f} MB (samples 2-4) -> {rss_l:.0f} MB (last 3 under load); "
          f"threads {thr_e:.0f} -> {thr_l:.0f}")
    if rss_l > rss_e * 1.10 + 32:
        problems.append(f"RSS grew: {rss_e:.0f} -> {rss_l:.0f} MB")
    if thr_l > thr_e * 1.10 + 8:
        problems.append(f"threads grew: {thr_e:.0f} -> {thr_l:.0f}")
else:
    problems.append(f"only {len(load_rows)} samples under load: run at least 60 s")
if final[3] != 0 or final[6] != 0 or final[7] != 0:
    problems.append(f"at the end: {final[3]} pages used, {final[6]} running, {final[7]} waiting")
if hung:
    problems.append(f"{len(hung)} invalid requests hung (deadline exceeded): {sorted(set(hung))}")
if wrongly_ok:
    problems.append(f"{len(wrongly_ok)} invalid requests answered OK: {sorted(set(wrongly_ok))}")
print("invalid requests by status:")
for (name, code), n in sorted(codes.items()):
    print(f"  {name:26s} {code:20s} {n}")
with open(f"{work}/verdict", "w") as f:
    f.write("\n".join(problems))
EOF
wait "$BENCH" || true
status=0
if ! kill -0 "$SERVER" 2>/dev/null; then
  echo "soak: the server died"; tail -n 30 "$WORK/serve.log"; status=1
fi
if [ -s "$WORK/verdict" ]; then
  echo "soak: NOT flat / failed checks:"; cat "$WORK/verdict"; echo; status=1
fi
if [ -s "$WORK/failures" ]; then echo "soak: bench runs failed:"; cat "$WORK/failures"; status=1; fi
runs=$(cat "$WORK/bench_runs" 2>/dev/null || echo 0)
echo "soak: ${DURATION}s, $runs bench runs of 720 streams (180 at once, 20% cancelled) beside 20 invalid-request clients"
[ $status -eq 0 ] && echo "soak: PASS" || echo "soak: FAIL (logs in $WORK)"
[ $status -eq 0 ] && rm -rf "$WORK"
exit $status
