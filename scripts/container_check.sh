#!/usr/bin/env bash
# The deployment checks of the README's test command: the Kubernetes manifests
# (scripts/k8s_check.sh), then the image. Builds the CPU image from docker/Dockerfile with podman
# and checks the running container from outside, the way a user runs it. No Docker engine or
# image registry is needed: the base is a Debian bookworm minbase made with mmdebstrap from the
# host's apt mirror and loaded with `podman import` (the tarball is cached), and the image takes
# the bundle of the build the tests already made (Dockerfile BUNDLE=prebuilt) instead of
# compiling again. Checks:
#   the image keeps its HEALTHCHECK (docker format) and runs as a non-root USER;
#   `podman healthcheck run` reports healthy; grpc.health.v1 is SERVING on the published port;
#   a generation streams through the published port (mlra-serve client); the OpenAI HTTP API on
#   port 8000: /health, /v1/models and a /v1/completions request answer through the published
#   port; the tokenizer is the image's share/mlra-serve/gpt2, found
#   beside the binary; /metrics answers and counts the gRPC and HTTP calls;
#   the model is served from a read-only mount given by --model-dir (metrics model_name,
#   log line, and a write into it fails); every process in the container runs as uid 10001;
#   SIGTERM to the container's PID 1 mid-stream drains that stream and the server exits 0 within
#   its grace period (scripts/stream_drain_check.py); a container of the image's CMD as it is
#   answers the HTTP checks on port 8000; a container serving with --tp 2 (two worker processes,
#   all uid 10001) answers a gRPC stream and an HTTP completion; `podman stop` ends both with
#   status 0.
# Podman settings this host needs: runtime runc (crun fails on hybrid cgroups), --format=docker
# (the OCI format drops HEALTHCHECK), --ulimit nofile/nproc (the default file limit exceeds the
# host's), --init (so SIGTERM reaches the server), health checks run on demand (no systemd).
# The image part skips (one line, exit 0) where podman cannot run here; any failed check exits 1.
# Environment: MLRA_CONTAINER_CHECK=0 skips the image part; MLRA_BUILD_DIR (default build/cpu);
# MLRA_CACHE_DIR (base tarball, default ~/.cache/mlra); MLRA_BASE_MAX_AGE_DAYS (remake the base
# after this many days, default 30); MLRA_DEBIAN_MIRROR (mirror URL or sources file for
# mmdebstrap; default: the host's Debian apt sources).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
log() { echo "container_check: $*"; }
skip() {
  echo "container_check: SKIPPED: $*"
  exit 0
}
bash scripts/k8s_check.sh

[[ "${MLRA_CONTAINER_CHECK:-1}" == 0 ]] && skip "MLRA_CONTAINER_CHECK=0"
build="${MLRA_BUILD_DIR:-build/cpu}"
client="$build/server/mlra-serve"
if [[ ! -x "$client" ]]; then
  echo "container_check: FAILED: $client is missing (scripts/build.sh cpu builds it)" >&2
  exit 1
fi

SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
  else
    skip "rootful podman needs root or passwordless sudo"
  fi
fi

# podman, the runc runtime, catatonit (--init), netavark + iptables (published ports), mmdebstrap.
packages=(podman runc catatonit netavark iptables mmdebstrap)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  apt_install=("${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq
    --no-install-recommends "${missing[@]}")
  if ! "${apt_install[@]}" >/dev/null 2>&1; then
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 || true
    "${apt_install[@]}" >/dev/null 2>&1 || skip "could not install ${missing[*]} with apt-get"
  fi
fi

# Podman on a host without systemd logs an error for every health-check timer it cannot create;
# the checks run on demand instead, so those lines are dropped.
pm() { "${SUDO[@]}" podman --runtime runc "$@" 2> >(grep -v 'systemd connection' >&2); }
# The default open-file limit of a container exceeds this host's hard limit.
limits=(--ulimit nofile=20000:20000 --ulimit nproc=4096:4096)

work="$(mktemp -d -t mlra-container.XXXXXX)"
mkdir -p build/container
tree="$(mktemp -d build/container/tree.XXXXXX)"
image="localhost/mlra-serve:check-$$"
base_image="localhost/mlra-base:bookworm"
containers=()  # started by this run, removed on exit; the last one is the one being checked
cleanup() {
  for c in "${containers[@]}"; do pm rm -f -t 0 "$c" >/dev/null 2>&1 || true; done
  pm rmi -f "$image" >/dev/null 2>&1 || true
  rm -rf "$work" "$tree"
}
trap cleanup EXIT
die() {
  echo "container_check: FAILED: $*" >&2
  if ((${#containers[@]})); then
    echo "--- log of ${containers[-1]} (last 40 lines) ---" >&2
    pm logs "${containers[-1]}" 2>&1 | tail -40 >&2 || true
  fi
  exit 1
}

# The Debian base: made once, remade after MLRA_BASE_MAX_AGE_DAYS; a lock keeps parallel runs
# from making it twice.
cache="${MLRA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/mlra}"
base_tar="$cache/debian-bookworm-minbase.tar"
mkdir -p "$cache"
exec 9>"$cache/base.lock"
flock 9
if [[ ! -s "$base_tar" || -n "$(find "$base_tar" -mtime "+${MLRA_BASE_MAX_AGE_DAYS:-30}")" ]]; then
  mirror="${MLRA_DEBIAN_MIRROR:-}"
  if [[ -z "$mirror" && -f /etc/apt/sources.list.d/debian.sources ]] &&
    grep -q bookworm /etc/apt/sources.list.d/debian.sources; then
    mirror=/etc/apt/sources.list.d/debian.sources
  elif [[ -z "$mirror" && -f /etc/apt/sources.list ]] &&
    grep -qE '^deb[[:space:]].*[[:space:]]bookworm' /etc/apt/sources.list; then
    mirror="$work/debian.list"
    grep -E '^deb[[:space:]].*[[:space:]]bookworm(-updates|-security)?[[:space:]]' \
      /etc/apt/sources.list >"$mirror"
  fi
  mirror="${mirror:-http://deb.debian.org/debian}"
  log "making the Debian bookworm base with mmdebstrap from $mirror"
  t0=$SECONDS
  if ! "${SUDO[@]}" mmdebstrap --variant=minbase --format=tar --quiet \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    bookworm "$base_tar.tmp" "$mirror" >"$work/mmdebstrap.log" 2>&1; then
    tail -5 "$work/mmdebstrap.log" >&2
    "${SUDO[@]}" rm -f "$base_tar.tmp"
    skip "mmdebstrap could not make the Debian base from $mirror"
  fi
  "${SUDO[@]}" mv "$base_tar.tmp" "$base_tar"
  log "base tarball made in $((SECONDS - t0)) s ($base_tar)"
fi
# Imported again whenever the tarball is newer than the image (the label records which one);
# the image it replaces is removed unless a container still uses it.
stamp="$(stat -c %Y "$base_tar")"
if [[ "$(pm image inspect --format '{{index .Labels "org.mlra.base-stamp"}}' "$base_image" \
  2>/dev/null)" != "$stamp" ]]; then
  old_base="$(pm image inspect --format '{{.Id}}' "$base_image" 2>/dev/null || true)"
  pm import --change 'CMD ["/bin/bash"]' --change "LABEL org.mlra.base-stamp=$stamp" \
    "$base_tar" "$base_image" >"$work/import.log" 2>&1 ||
    die "podman import of $base_tar failed: $(tail -3 "$work/import.log")"
  [[ -z "$old_base" ]] || pm rmi "$old_base" >/dev/null 2>&1 || true
fi
flock -u 9

# Can podman run a container with a published port here at all?
if ! probe="$(pm run --rm "${limits[@]}" -p 127.0.0.1::9 "$base_image" true 2>&1)"; then
  skip "podman cannot run a container here: $(grep -m1 . <<<"$probe")"
fi

log "building $image (CPU backend, bundle of $build)"
t0=$SECONDS
bash docker/image_tree.sh "$build" "$tree"
if ! pm build --format docker --layers=false -f docker/Dockerfile \
  --build-arg BUILD_IMAGE="$base_image" --build-arg RUNTIME_IMAGE="$base_image" \
  --build-arg BACKEND=cpu --build-arg BUNDLE=prebuilt -t "$image" "$tree" \
  >"$work/build.log" 2>&1; then
  tail -30 "$work/build.log" >&2
  die "podman build failed"
fi
log "image built in $((SECONDS - t0)) s"
health_test="$(pm image inspect --format '{{json .Config.Healthcheck.Test}}' "$image")"
[[ "$health_test" == *'"--health"'* ]] || die "the image has no HEALTHCHECK (got $health_test)"
user="$(pm image inspect --format '{{.Config.User}}' "$image")"
[[ -n "$user" && "$user" != root && "$user" != 0 ]] || die "the image runs as '$user', not non-root"

# Starts container $1 from the image with the serve arguments that follow (published ports,
# --init, the ulimits), waits until `podman healthcheck run` passes, and sets grpc_addr,
# metrics_addr and http_addr to the published ports.
start_container() {
  local name="$1"
  shift
  containers+=("$name")
  pm run -d --name "$name" --init "${limits[@]}" -p 127.0.0.1::50051 -p 127.0.0.1::9464 \
    -p 127.0.0.1::8000 "$@" >/dev/null || die "podman run failed"
  local t0=$SECONDS state status
  for _ in $(seq 1 180); do
    state="$(pm inspect --format '{{.State.Status}}' "$name")"
    [[ "$state" == running ]] || die "$name stopped during start-up (state $state)"
    if pm healthcheck run "$name" >/dev/null 2>&1; then
      status="$(pm inspect --format '{{.State.Health.Status}}' "$name")"
      [[ "$status" == healthy ]] || die "health status '$status' after a passing health check"
      log "$name: HEALTHCHECK healthy after $((SECONDS - t0)) s"
      grpc_addr="$(pm port "$name" 50051/tcp)"
      metrics_addr="$(pm port "$name" 9464/tcp)"
      http_addr="$(pm port "$name" 8000/tcp)"
      [[ -n "$grpc_addr" && -n "$metrics_addr" && -n "$http_addr" ]] || die "ports not published"
      return 0
    fi
    sleep 1
  done
  die "$name: HEALTHCHECK did not pass within 180 s"
}

# Streams a seeded generation of $1 tokens through grpc_addr with the host's client.
stream_tokens() {
  local n="$1" out
  out="$("$client" client --addr "$grpc_addr" --prompt "Once upon a time" -n "$n" \
    --temperature 0.8 --top-p 0.95 --seed 7 --ignore-eos --stream --timeout-s 120 \
    2>"$work/gen.err")" || die "mlra-serve client --stream failed: $(cat "$work/gen.err")"
  grep -q "completion_tokens=$n " "$work/gen.err" ||
    die "the stream did not end with $n tokens: $(cat "$work/gen.err")"
  [[ -n "${out//[[:space:]]/}" ]] || die "the streamed text is empty"
  log "streamed $n tokens through $grpc_addr:${out//$'\n'/ }"
}

# Through http_addr (the published port 8000) with the host's Python: GET /health is 200,
# GET /v1/models lists model $1 alone, and POST /v1/completions returns a greedy completion of
# exactly $2 tokens of "Once upon a time" (4 prompt tokens) under that model name.
http_checks() {
  local model="$1" n="$2" out
  out="$(/usr/bin/python3 - "$http_addr" "$model" "$n" 2>&1 <<'PY'
import json
import sys
import urllib.request

addr, model, n = sys.argv[1], sys.argv[2], int(sys.argv[3])


def call(path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://{addr}{path}", data=data,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())
    except (OSError, ValueError) as e:  # refused, HTTP error status, timeout, not JSON
        sys.exit(f"{path}: {e}")


def check(ok, what, reply):
    if not ok:
        sys.exit(f"{what}: {json.dumps(reply)[:400]}")


call("/health")
models = call("/v1/models")
check(models.get("object") == "list" and [m.get("id") for m in models.get("data", [])] == [model],
      f"/v1/models does not list {model} alone", models)
reply = call("/v1/completions", {"model": model, "prompt": "Once upon a time", "max_tokens": n,
                                 "temperature": 0, "ignore_eos": True})
check(reply.get("object") == "text_completion" and reply.get("model") == model,
      "/v1/completions: not a text_completion of " + model, reply)
choices = reply.get("choices", [])
check(len(choices) == 1 and choices[0].get("text", "").strip(), "/v1/completions: no text", reply)
usage = reply.get("usage", {})
check(usage.get("prompt_tokens") == 4 and usage.get("completion_tokens") == n,
      f"/v1/completions: usage is not 4 prompt + {n} completion tokens", reply)
print(choices[0]["text"].replace("\n", " "))
PY
  )" || die "HTTP API through $http_addr: $out"
  log "HTTP through $http_addr: /health 200, /v1/models lists $model, /v1/completions gave $n" \
    "tokens:$out"
}

# Checks that container $1 runs exactly $2 processes (init, server, TP workers), all as 10001.
check_processes() {
  local procs
  procs="$(pm top "$1" huser args | tail -n +2)"
  grep -q "mlra-serve serve" <<<"$procs" || die "no mlra-serve serve process in: $procs"
  [[ "$(wc -l <<<"$procs")" == "$2" ]] || die "expected $2 processes, found: $procs"
  if awk '$1 != "10001"' <<<"$procs" | grep -q .; then
    die "processes not running as uid 10001: $procs"
  fi
  log "$1: all $2 processes run as uid 10001"
}

# TP1 with the model folder from a read-only mount: the tree's copy of models/default under
# another name, so the metrics label and the log show that the mount is what is served.
mount_name="mounted-default"
name="mlra-check-$$"
start_container "$name" -v "$PWD/$tree/models/default:/models/$mount_name:ro" "$image" \
  serve --config /opt/mlra-serve/configs/default.json --host 0.0.0.0 --model-dir "/models/$mount_name" \
  --metrics-port 9464 --http-port 8000

health="$("$client" client --addr "$grpc_addr" --health --timeout-s 5 2>&1)" ||
  die "grpc.health.v1 check through $grpc_addr failed: $health"
[[ "$health" == SERVING ]] || die "grpc.health.v1 says '$health', expected SERVING"
log "grpc.health.v1 SERVING through $grpc_addr"

n=16
stream_tokens "$n"
http_checks "$mount_name" "$n"
pm logs "$name" 2>&1 | grep -q "tokenizer: /opt/mlra-serve/share/mlra-serve/gpt2 " ||
  die "the log does not show the tokenizer loaded from /opt/mlra-serve/share/mlra-serve/gpt2"
log "tokenizer loaded from the image's /opt/mlra-serve/share/mlra-serve/gpt2"

metrics="$(/usr/bin/python3 -c 'import sys, urllib.request
print(urllib.request.urlopen("http://" + sys.argv[1] + "/metrics", timeout=5).read().decode())' \
  "$metrics_addr")" || die "GET http://$metrics_addr/metrics failed"
for series in "mlra:engine_healthy{model_name=\"$mount_name\"} 1" \
  "mlra:generation_tokens_total{model_name=\"$mount_name\"} $((2 * n))"; do
  grep -qF "$series" <<<"$metrics" || die "/metrics lacks '$series'"
done
for protocol in grpc http; do
  awk -v p="protocol=\"$protocol\"" 'index($0, "mlra:requests_total{") == 1 && index($0, p) &&
    index($0, "code=\"OK\"") && $NF == "1" { found = 1 } END { exit !found }' <<<"$metrics" ||
    die "/metrics does not count one OK $protocol call"
done
log "/metrics answers through $metrics_addr (model_name=\"$mount_name\", $((2 * n)) tokens and" \
  "one OK call per protocol counted)"

pm logs "$name" 2>&1 | grep -q "loading mlra4 from /models/$mount_name " ||
  die "the log does not show the model loaded from /models/$mount_name"
if write="$(pm exec --user root "$name" touch "/models/$mount_name/.write-probe" 2>&1)"; then
  die "/models/$mount_name is writable inside the container"
fi
[[ "$write" == *"Read-only file system"* ]] || die "write into the mount failed oddly: $write"
log "model served from the read-only mount /models/$mount_name (--model-dir)"

check_processes "$name" 2

# SIGTERM goes to PID 1 (the --init process), as `docker stop` sends it; the server must drain
# the in-flight stream and exit 0 within its grace period (serve --grace-s, default 30 s).
grace=30
pid1="$(pm inspect --format '{{.State.Pid}}' "$name")"
t0=$SECONDS
"${SUDO[@]}" /usr/bin/python3 scripts/stream_drain_check.py --addr "$grpc_addr" --max-tokens 128 \
  --signal-pid "$pid1" || die "SIGTERM drain check failed"
code="$(timeout $((grace + 10)) "${SUDO[@]}" podman wait "$name" 2>/dev/null)" ||
  die "the container did not exit within $((grace + 10)) s of SIGTERM"
elapsed=$((SECONDS - t0))
[[ "$code" == 0 ]] || die "the container exited with status $code after SIGTERM"
((elapsed <= grace)) || die "SIGTERM to exit took $elapsed s (grace $grace s)"
pm logs "$name" 2>&1 | grep -q "stopped cleanly" || die "the server did not log a clean stop"
log "SIGTERM: stream drained, exit status 0 after $elapsed s (grace $grace s)"

# The image's CMD as it is (no arguments): the bundled default model, with the HTTP API on 8000.
name="mlra-check-cmd-$$"
start_container "$name" "$image"
http_checks default "$n"
pm stop -t $((grace + 10)) "$name" >/dev/null || die "podman stop failed"
code="$(pm inspect --format '{{.State.ExitCode}}' "$name")"
[[ "$code" == 0 ]] || die "the CMD container exited with status $code after podman stop"
log "the image's CMD serves the HTTP API on 8000; podman stop ended it with status 0"

# TP2 on the CPU backend: the frontend starts two worker processes in the container (the
# multi-GPU layout, with the shared-memory all-reduce in the container's /dev/shm); then
# `podman stop`, the runtime's own stop path, must end all of them with status 0.
name="mlra-check-tp2-$$"
start_container "$name" "$image" serve --config /opt/mlra-serve/configs/default.json --host 0.0.0.0 --tp 2 \
  --metrics-port 9464 --http-port 8000
stream_tokens "$n"
http_checks default "$n"
check_processes "$name" 4
t0=$SECONDS
pm stop -t $((grace + 10)) "$name" >/dev/null || die "podman stop failed"
code="$(pm inspect --format '{{.State.ExitCode}}' "$name")"
[[ "$code" == 0 ]] || die "the TP2 container exited with status $code after podman stop"
log "TP2: podman stop ended it with status 0 after $((SECONDS - t0)) s"

log "passed in $((SECONDS - started)) s"
