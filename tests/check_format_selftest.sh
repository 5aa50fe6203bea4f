#!/usr/bin/env bash
# scripts/check_format.sh accepts a formatted tree and names the one misformatted file.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
git init -q .
cp "$here/.clang-format" .
printf 'int add(int a, int b) {\n  return a + b;\n}\n' > good.cpp
git add .clang-format good.cpp
bash "$here/scripts/check_format.sh" "$tmp"
printf 'int  sub(int a,int b){\nreturn a-b;}\n' > bad.cu
git add bad.cu
if out="$(bash "$here/scripts/check_format.sh" "$tmp")"; then
  echo "a misformatted file passed"; exit 1
fi
[ "$out" = "not clang-formatted: bad.cu" ] || { echo "unexpected output: $out"; exit 1; }
echo "check_format selftest passed"
