#!/usr/bin/env bash
# The README's test command: installs what is missing, builds (CPU-only: CI has no GPU), and runs
# every test through ctest. GPU tests (label gpu) need the cuda preset and a GPU; see
# scripts/gpu_check.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/check_format.sh  # the tree is as clang-format 14 writes it
bash scripts/build.sh cpu
ctest --preset cpu -j "$(nproc)" --label-exclude gpu
bash scripts/fuzz.sh 20
bash scripts/container_check.sh  # Kubernetes manifests, then the image (docker/README.md)
