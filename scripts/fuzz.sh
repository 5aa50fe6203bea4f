#!/usr/bin/env bash
# Runs the libFuzzer targets of tests/fuzz/ (pickle, zip, safetensors, config, tokenizer) for a
# given time each, starting from the checked-in corpus (tests/fuzz/corpus/<target>, copied, so
# the checkout is never written), after replaying tests/fuzz/regressions/<target> (inputs that once
# crashed or hung a reader). Builds them first with clang (Debian clang +
# libclang-rt-14-dev, installed by scripts/setup.sh). Exits non-zero when any target finds a
# crash, leak or timeout; the reproducer is left in build/fuzz/artifacts/<target>/.
#
#   scripts/fuzz.sh [seconds per target, default 20] [target ...]
#   build/fuzz/fuzz_zip build/fuzz/artifacts/zip/crash-...   # replay one input
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SECONDS_EACH="${1:-20}"
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(pickle zip safetensors config tokenizer)
BUILD="$ROOT/build/fuzz"

launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
cmake -S "$ROOT/tests/fuzz" -B "$BUILD" -G Ninja -DCMAKE_C_COMPILER=clang \
  -DCMAKE_CXX_COMPILER=clang++ "${launcher[@]}" >/dev/null
cmake --build "$BUILD" -j "${FUZZ_BUILD_JOBS:-2}" >/dev/null

failed=()
for t in "${TARGETS[@]}"; do
  # Inputs that once crashed or hung a reader must keep passing.
  if [ -d "$ROOT/tests/fuzz/regressions/$t" ]; then
    if ! "$BUILD/fuzz_$t" -timeout=10 -rss_limit_mb=2048 "$ROOT/tests/fuzz/regressions/$t/"* \
        >"$BUILD/regressions_$t.log" 2>&1; then
      failed+=("$t(regressions)")
      tail -n 40 "$BUILD/regressions_$t.log"
    fi
  fi
  work="$BUILD/work/$t"
  rm -rf "$work" && mkdir -p "$work/corpus" "$BUILD/artifacts/$t"
  cp "$ROOT/tests/fuzz/corpus/$t/"* "$work/corpus/"
  echo "fuzz: $t for ${SECONDS_EACH}s"
  if ! "$BUILD/fuzz_$t" "$work/corpus" -max_total_time="$SECONDS_EACH" -max_len=16384 \
      -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="$BUILD/artifacts/$t/" >"$work/log" 2>&1; then
    failed+=("$t")
    tail -n 40 "$work/log"
  fi
  grep -E "^stat::number_of_executed_units|^#[0-9]+ +DONE" "$work/log" | tail -n 2 || true
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: FAILED: ${failed[*]} (inputs in $BUILD/artifacts/)"
  exit 1
fi
echo "fuzz: ${#TARGETS[@]} targets clean"
