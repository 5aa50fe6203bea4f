#!/usr/bin/env bash
# Validates the Kubernetes manifests (docker/k8s) against the Kubernetes schemas and the server's
# settings with docker/k8s/validator/validate.cjs, after its self-test (every seeded fault must be
# reported). The validator's npm packages, pinned by docker/k8s/validator/package-lock.json, are
# installed into .cache/k8s-validator on first use and again when the lock changes; node and npm
# come from Debian packages where missing. Skips (one line, exit 0) only where those cannot be
# installed; a manifest problem exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."
skip() {
  echo "k8s_check: SKIPPED: $*"
  exit 0
}
src=docker/k8s/validator
tools="${MLRA_K8S_TOOLS:-.cache/k8s-validator}"

missing=()
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if ((${#missing[@]})); then
  SUDO=()
  [[ "$(id -u)" -ne 0 ]] && SUDO=(sudo -n)
  echo "k8s_check: installing ${missing[*]}"
  apt_install=("${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq
    --no-install-recommends "${missing[@]}")
  if ! "${apt_install[@]}" >/dev/null 2>&1; then
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 || true
    "${apt_install[@]}" >/dev/null 2>&1 || skip "could not install ${missing[*]} with apt-get"
  fi
fi

if [[ ! -d "$tools/node_modules" ]] || ! cmp -s "$src/package-lock.json" "$tools/package-lock.json"
then
  rm -rf "$tools"
  mkdir -p "$tools"
  cp "$src/package.json" "$src/package-lock.json" "$tools/"
  if ! (cd "$tools" && npm ci --no-audit --no-fund --silent >/dev/null 2>&1); then
    rm -rf "$tools"
    skip "npm ci could not install the validator (npm registry unreachable?)"
  fi
fi
export NODE_PATH="$PWD/$tools/node_modules"
node "$src/validate.cjs" --self-test docker/k8s
node "$src/validate.cjs" docker/k8s
