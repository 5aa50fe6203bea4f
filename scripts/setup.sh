#!/usr/bin/env bash
# Installs the Debian 12 packages mlra-serve builds and tests with. Idempotent, non-interactive:
# only missing packages are installed. CUDA 13 (optional) is expected at /usr/local/cuda.
set -euo pipefail
PACKAGES=(
  build-essential cmake ninja-build pkg-config git
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  nlohmann-json3-dev libspdlog-dev libfmt-dev catch2 libcli11-dev
  libopenblas-dev libpcre2-dev prometheus-cpp-dev zlib1g-dev openssl clang clang-format libclang-rt-14-dev
  libboost-dev curl
  python3 python3-torch python3-numpy python3-grpcio python3-protobuf
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# node + npm for the HTTP API's client test (the official openai npm client); a node already
# installed from elsewhere (it may bring its own npm) is kept.
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#PACKAGES[@]} packages present"
  exit 0
fi
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "setup: installing ${missing[*]}"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
