#!/usr/bin/env bash
# Lints docker/Dockerfile (not part of CI: it fetches two npm packages on first use).
#  - dockerfile-utils (the validator behind VS Code's Docker language service): instruction
#    syntax, flags, ports;
#  - dockerfilelint: best practices (apt-get -y / --no-install-recommends, sudo, tags); its
#    HEALTHCHECK rule misreads --start-period, so docker/.dockerfilelintrc turns that rule off;
#  - our own checks: every -dev package scripts/setup.sh installs is in the build stage, apt
#    lists are removed in the RUN that fills them, the final stage runs as a non-root USER and
#    has a HEALTHCHECK.
# hadolint is not used: its npm wrapper downloads a binary from GitHub, which our machines cannot
# reach, and Debian 12 does not package it. Usage: scripts/lint_dockerfile.sh [Dockerfile]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
file="${1:-$root/docker/Dockerfile}"
tools="${MLRA_LINT_TOOLS:-$root/.cache/lint-npm}"
bin="$tools/node_modules/.bin"
if [[ ! -x "$bin/dockerfile-utils" || ! -x "$bin/dockerfilelint" ]]; then
  mkdir -p "$tools"
  npm install --no-audit --no-fund --silent --prefix "$tools" \
    dockerfile-utils@0.16.3 dockerfilelint@1.8.0 >/dev/null
fi

status=0
echo "== dockerfile-utils lint"
"$bin/dockerfile-utils" lint "$file" || status=1
echo "== dockerfilelint"
"$bin/dockerfilelint" -c "$root/docker" "$file" || status=1

echo "== project checks"
fail() { echo "lint_dockerfile: $*" >&2; status=1; }
# Joined logical lines (backslash continuations folded), comments dropped.
logical="$(sed -e 's/#.*$//' "$file" | sed -e ':a' -e '/\\$/N; s/\\\n/ /; ta')"
for pkg in $(sed -n '/^PACKAGES=(/,/^)/p' "$root/scripts/setup.sh" | tr ' ' '\n' | grep -- '-dev$'); do
  grep -qE "(^|[[:space:]])${pkg//+/\\+}([[:space:]]|$)" <<<"$logical" ||
    fail "package $pkg (scripts/setup.sh) is missing from the Dockerfile"
done
while IFS= read -r line; do
  if grep -q 'apt-get install' <<<"$line"; then
    grep -q -- '--no-install-recommends' <<<"$line" || fail "apt-get install without --no-install-recommends: $line"
  fi
  if grep -q 'apt-get update' <<<"$line"; then
    grep -q 'rm -rf /var/lib/apt/lists' <<<"$line" || fail "apt lists not removed in the same RUN: $line"
  fi
done < <(grep -E '^[[:space:]]*RUN' <<<"$logical")
final="$(awk '/^FROM/{n++} {if (n) stage[n]=stage[n] $0 "\n"} END{printf "%s", stage[n]}' <<<"$logical")"
user="$(grep -E '^USER' <<<"$final" | tail -1 | awk '{print $2}')"
[[ -n "$user" && "$user" != "root" && "$user" != "0" ]] || fail "the final stage must run as a non-root USER"
grep -q '^HEALTHCHECK' <<<"$final" || fail "the final stage has no HEALTHCHECK"

if (( status == 0 )); then echo "lint_dockerfile: $file is clean"; fi
exit "$status"
