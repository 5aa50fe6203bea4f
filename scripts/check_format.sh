#!/usr/bin/env bash
# Checks that every tracked C++/CUDA source of the tree is as clang-format (the .clang-format at
# the root) writes it. The contract is Debian 12's clang-format 14: another major version breaks
# lines differently, so it is refused with a one-line error rather than reporting false diffs.
# Usage: scripts/check_format.sh [repository root]   (CLANG_FORMAT=clang-format-14 picks the binary)
# Exit 0 when clean, 1 with one line per misformatted file (fix: clang-format -i FILE).
set -euo pipefail
root="$(cd "${1:-$(dirname "$0")/..}" && pwd)"
cd "$root"
tool="${CLANG_FORMAT:-clang-format}"
command -v "$tool" >/dev/null || { echo "check_format: $tool not found (apt-get install clang-format)"; exit 2; }
major="$("$tool" --version | sed -n 's/.*version \([0-9]*\)\..*/\1/p')"
[ "$major" = 14 ] || { echo "check_format: $tool is version $major, the tree is formatted with 14"; exit 2; }
bad=0
while IFS= read -r -d '' file; do
  if ! "$tool" --dry-run --Werror "$file" >/dev/null 2>&1; then
    echo "not clang-formatted: $file"
    bad=1
  fi
done < <(git ls-files -z -- '*.h' '*.cpp' '*.cc' '*.cu' '*.cuh')
exit $bad
