#!/usr/bin/env bash
# Lays out the image's /opt/mlra-serve from a build tree, so the Dockerfile's compile stage and a
# bundle made outside the image (the `prebuilt` stage, scripts/container_check.sh) are the same:
#   bin/, bin/.real/, lib/            scripts/bundle.sh (mlra-serve, mlra-bench where built)
#   share/mlra-serve/gpt2/            the GPT-2 tokenizer, found beside bin/ (default_tokenizer_dir)
#   configs/                          server configs; default.json serves models/default
#   models/default/                   the small default model (models/default/README.md)
# Usage: docker/image_tree.sh build_dir out_dir
set -euo pipefail
if [[ $# -ne 2 ]]; then
  echo "usage: docker/image_tree.sh build_dir out_dir" >&2
  exit 2
fi
root="$(cd "$(dirname "$0")/.." && pwd)"
build="$1"
out="$2"
if [[ ! -x "$build/server/mlra-serve" ]]; then
  echo "image_tree: $build/server/mlra-serve is missing (build it first: scripts/build.sh cpu)" >&2
  exit 1
fi
BUNDLE_BINARIES="server/mlra-serve server/mlra-bench" \
  bash "$root/scripts/bundle.sh" --no-share --no-limit "$build" "$out" >/dev/null
mkdir -p "$out/share/mlra-serve" "$out/models"
cp -r "$root/models/assets/gpt2" "$out/share/mlra-serve/gpt2"
cp -r "$root/configs" "$out/configs"
cp -r "$root/models/default" "$out/models/default"
# Readable by the image's non-root user whatever the umask of the machine that made it.
chmod -R a+rX "$out"
