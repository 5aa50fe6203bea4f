#!/usr/bin/env bash
# Bundles the built binaries for a machine without our build dependencies (the GPU machine, a
# release tarball, a Docker stage): bin/ (wrappers that set LD_LIBRARY_PATH) and bin/.real/ (the
# binaries), lib/ (every shared library ldd lists, except CUDA's and glibc's, which the target
# provides), share/ (model assets and test data). Usage:
#   scripts/bundle.sh [--no-share] [--tar] [--no-limit] [build_dir] [out_dir]
# --no-share leaves share/ out (when the repository checkout travels with the bundle anyway);
# --no-limit drops the 60 MB check, which guards the device carry (an image has no such limit);
# --tar also writes out_dir.tar.xz (Debian's OpenBLAS alone is 36 MB uncompressed: the folder
# exceeds 60 MB once mlra-serve's gRPC/OpenSSL come along; the .tar.xz is about 14 MB).
set -euo pipefail

with_share=1
with_tar=0
with_limit=1
while [[ "${1:-}" == --* ]]; do
  case "$1" in
    --no-share) with_share=0 ;;
    --tar) with_tar=1 ;;
    --no-limit) with_limit=0 ;;
    *) echo "bundle: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

root="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-$root/build/cuda}"
out="${2:-$root/.device/bundle}"
# BUNDLE_BINARIES="server/mlra-bench tests/mlra_gpu_tests" bundles fewer (a smaller carry).
read -r -a binaries <<< "${BUNDLE_BINARIES:-server/mlra-serve server/mlra-bench tests/mlra_gpu_tests tests/mlra_tests}"
# Provided by the target: the CUDA runtime libraries and the C runtime.
skip='lib(cudart|cublas|cublasLt|nccl|cuda|c|m|dl|pthread|rt|gcc_s)\.so|ld-linux'

rm -rf "$out"
mkdir -p "$out/bin/.real" "$out/lib" "$out/share"
for b in "${binaries[@]}"; do
  if [[ ! -x "$build/$b" ]]; then
    echo "bundle: skipping missing $build/$b" >&2
    continue
  fi
  name="$(basename "$b")"
  cp "$build/$b" "$out/bin/.real/$name"
  strip --strip-debug "$out/bin/.real/$name" 2>/dev/null || true
  ldd "$build/$b" | awk '/=> \//{print $3}' | while read -r lib; do
    base="$(basename "$lib")"
    if [[ "$base" =~ ^($skip) ]]; then continue; fi
    [[ -e "$out/lib/$base" ]] || cp -L "$lib" "$out/lib/$base"
  done
  cat > "$out/bin/$name" <<WRAP
#!/usr/bin/env bash
here="\$(cd "\$(dirname "\$0")" && pwd)"
export LD_LIBRARY_PATH="\$here/../lib:/usr/local/cuda/lib64:\${LD_LIBRARY_PATH:-}"
export NCCL_NVLS_ENABLE=0
exec "\$here/.real/$name" "\$@"
WRAP
  chmod +x "$out/bin/$name"
done
strip --strip-unneeded "$out"/lib/*.so* 2>/dev/null || true
if (( with_share )); then
  [[ -d "$root/models/assets" ]] && cp -r "$root/models/assets" "$out/share/assets"
  [[ -d "$root/tests/data" ]] && cp -r "$root/tests/data" "$out/share/test_data"
fi
du -sh "$out"
if (( with_tar )); then
  tar -C "$(dirname "$out")" -cJf "$out.tar.xz" "$(basename "$out")"
  du -sh "$out.tar.xz"
  exit 0
fi
size_mb=$(du -sm "$out" | cut -f1)
if (( with_limit && size_mb > 60 )); then
  echo "bundle: $out is ${size_mb} MB (limit 60); use --tar for a compressed bundle" >&2
  exit 1
fi
