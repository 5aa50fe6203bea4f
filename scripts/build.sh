#!/usr/bin/env bash
# Configures and builds with a preset: scripts/build.sh [cpu|cuda|debug] (default: cuda when
# /usr/local/cuda exists, else cpu).
set -euo pipefail
cd "$(dirname "$0")/.."
preset="${1:-}"
if [ -z "$preset" ]; then
  if [ -x /usr/local/cuda/bin/nvcc ]; then preset=cuda; else preset=cpu; fi
fi
cmake --preset "$preset" >/dev/null
cmake --build --preset "$preset" -j "${MLRA_JOBS:-$(nproc)}"
echo "build/$preset"
