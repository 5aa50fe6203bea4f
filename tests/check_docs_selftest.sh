#!/usr/bin/env bash
# ctest check_docs_selftest: scripts/check_docs.sh on two scratch trees. The broken one must be
# refused with exactly the expected problems (dead link, dead .md mention, work-log references in
# a C++ comment, a Python comment and a README) while links in code spans, fences, URLs and
# string literals are left alone; the clean one must pass.
set -euo pipefail
check="$(cd "$(dirname "$0")/.." && pwd)/scripts/check_docs.sh"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

mkdir -p "$tmp/bad/sub" "$tmp/good/sub"
# The fixtures spell the work-log word through $w so that this file passes the check itself.
w=sto
w+=p
cat >"$tmp/bad/README.md" <<EOF
# Tree
[ok](sub/a.md), [ok folder](sub/), [anchor](#tree), [web](https://example.com/x.md)
[dead](missing.md) and \`[in code](nope.md)\`
\`\`\`
[in a fence](fenced.md)
\`\`\`
Measured in $w 12.
EOF
echo "See sub/a.md and sub/gone.md; [up](../README.md)." >"$tmp/bad/sub/a.md"
cat >"$tmp/bad/x.cpp" <<EOF
// S${w:1} 3 made this faster.
const char* kStop = "$w 4";  /* not a
   $w 5 either? it is: a comment */
EOF
printf '# fine\nx = "%s 6"  # %s 7\n' "$w" "$w" >"$tmp/bad/y.py"

cat >"$tmp/good/README.md" <<EOF
# Tree
[a](sub/a.md) mentions sub/a.md and https://example.com/gone.md; a non-$w run of 3 steps.
EOF
echo "[back](../README.md)" >"$tmp/good/sub/a.md"
echo "const char* kStop = \"$w 4\";  // ${w}s at the first match" >"$tmp/good/x.cpp"

expected="check_docs: README.md:3: 'missing.md' does not exist
check_docs: README.md:7: work-log reference '$w 12' (history belongs in git log)
check_docs: sub/a.md:1: 'sub/gone.md' does not exist
check_docs: x.cpp:1: work-log reference 'S${w:1} 3' (history belongs in git log)
check_docs: x.cpp:3: work-log reference '$w 5' (history belongs in git log)
check_docs: y.py:2: work-log reference '$w 7' (history belongs in git log)
check_docs: 6 problem(s)"

status=0
actual="$(bash "$check" "$tmp/bad")" || status=$?
if [[ $status -ne 1 || "$actual" != "$expected" ]]; then
  echo "check_docs on the broken tree: exit $status, output:"
  echo "$actual"
  echo "expected exit 1 and:"
  echo "$expected"
  exit 1
fi
bash "$check" "$tmp/good"
echo "check_docs_selftest: ok"
