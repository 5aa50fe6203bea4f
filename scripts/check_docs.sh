#!/usr/bin/env bash
# Checks the documentation contracts of the tree with bash, find, grep and POSIX awk only:
#  1. every relative link [text](target) in every *.md resolves to a file or folder (relative to
#     the .md's folder; a leading / means the repository root), outside code spans and fences;
#  2. every path-like mention of a .md file ("models/VARIANTS.md") in a doc or a source file
#     resolves from the repository root or from the mentioning file's folder;
#  3. no doc and no code comment carries a work-log reference (the word "stop" and a number):
#     history belongs in git log.
# Usage: scripts/check_docs.sh [repository root]   Exit 0 when clean, 1 with one line per problem.
set -euo pipefail
root="$(cd "${1:-$(dirname "$0")/..}" && pwd)"
cd "$root"

# Tracked-looking text files: build trees, caches, vendored assets and test fixtures skipped.
list_files() {
  find . \( -path './build*' -o -name .git -o -path ./.cache -o -path ./.device \
         -o -name node_modules -o -path ./models/assets -o -path ./tests/data \) -prune \
         -o -type f \( "$@" \) -print |
    sed 's|^\./||' | LC_ALL=C sort
}

problems=0
declare -A reported
report() {
  [[ -n "${reported[$*]:-}" ]] && return 0  # a link is also a mention: say it once
  reported[$*]=1
  echo "check_docs: $*"
  problems=$((problems + 1))
}

# Prints "line<TAB>target" for each inline link of a markdown file, skipping fenced blocks and
# `code spans`; images count as links.
md_links() {
  awk '
    /^[ \t]*(```|~~~)/ { fence = !fence; next }
    fence { next }
    {
      line = $0
      gsub(/`[^`]*`/, "", line)
      while (match(line, /\]\([^) \t]+/)) {
        target = substr(line, RSTART + 2, RLENGTH - 2)
        print NR "\t" target
        line = substr(line, RSTART + RLENGTH)
      }
    }' "$1"
}

# Resolves a target against a base folder (or the root for /...); true if it exists.
resolves() {
  local base="$1" target="$2"
  target="${target%%#*}"
  target="${target%%\?*}"
  target="${target//%20/ }"
  [[ -z "$target" ]] && return 0  # a pure #anchor
  if [[ "$target" == /* ]]; then
    [[ -e "$root$target" ]]
  else
    [[ -e "$base/$target" ]]
  fi
}

# 1. Markdown links.
while IFS= read -r md; do
  dir="$(dirname "$md")"
  while IFS=$'\t' read -r line target; do
    case "$target" in
      http://* | https://* | mailto:* | ftp://*) continue ;;
    esac
    resolves "$dir" "$target" || report "$md:$line: '${target%%#*}' does not exist"
  done < <(md_links "$md")
done < <(list_files -name '*.md')

# Source files whose comments are checked; C-family comments are // and /* */, the rest #.
c_like=(-name '*.h' -o -name '*.hpp' -o -name '*.cpp' -o -name '*.cc' -o -name '*.cu' -o -name
        '*.cuh' -o -name '*.proto' -o -name '*.js')
hash_like=(-name '*.sh' -o -name '*.py' -o -name 'CMakeLists.txt' -o -name '*.cmake' -o -name
           '*.yaml' -o -name '*.yml' -o -name 'Dockerfile' -o -name 'run')

# Prints "line<TAB>comment text" of a C-family file.
c_comments() {
  awk '
    {
      line = $0; out = ""
      while (line != "") {
        if (in_block) {
          end = index(line, "*/")
          if (end == 0) { out = out " " line; line = "" }
          else { out = out " " substr(line, 1, end - 1); line = substr(line, end + 2); in_block = 0 }
        } else {
          slash = index(line, "//"); block = index(line, "/*")
          if (slash && (!block || slash < block)) { out = out " " substr(line, slash + 2); line = "" }
          else if (block) { line = substr(line, block + 2); in_block = 1 }
          else line = ""
        }
      }
      if (out != "") print NR "\t" out
    }' "$1"
}

# Prints "line<TAB>comment text" of a #-comment file (python docstrings count as comments).
hash_comments() {
  awk '
    {
      line = $0
      n = gsub(/"""/, "\"\"\"", line)
      if (in_doc || n > 0) { print NR "\t" line; if (n % 2) in_doc = !in_doc; next }
      hash = index(line, "#")
      if (hash) print NR "\t" substr(line, hash + 1)
    }' "$1"
}

worklog='(^|[^[:alnum:]_])([Ss][Tt][Oo][Pp] [0-9]+)'
mdref='[[:alnum:]_.-]*/[[:alnum:]_./-]*\.md([^[:alnum:]_]|$)'
url='[[:alpha:]]+://[^[:space:])>]*'

# Checks the "line<TAB>text" pairs of one file (rules 2 and 3).
check_text() {
  local file="$1" dir
  dir="$(dirname "$file")"
  while IFS=$'\t' read -r line text; do
    if [[ "$text" =~ $worklog ]]; then
      report "$file:$line: work-log reference '${BASH_REMATCH[2]}' (history belongs in git log)"
    fi
    local rest="$text"
    while [[ "$rest" =~ $url ]]; do rest="${rest/"${BASH_REMATCH[0]}"/}"; done  # URLs are not paths
    while [[ "$rest" =~ $mdref ]]; do
      local ref="${BASH_REMATCH[0]}"
      rest="${rest#*"$ref"}"
      ref="${ref%[^[:alnum:]_]}"
      ref="${ref#./}"
      [[ -e "$root/$ref" || -e "$dir/$ref" ]] || report "$file:$line: '$ref' does not exist"
    done
  done
}

# Markdown files are text throughout: number every line (links were checked above).
while IFS= read -r md; do
  check_text "$md" < <(awk '{ print NR "\t" $0 }' "$md")
done < <(list_files -name '*.md')
while IFS= read -r src; do
  check_text "$src" < <(c_comments "$src")
done < <(list_files "${c_like[@]}")
while IFS= read -r src; do
  check_text "$src" < <(hash_comments "$src")
done < <(list_files "${hash_like[@]}")

if ((problems > 0)); then
  echo "check_docs: $problems problem(s)"
  exit 1
fi
echo "check_docs: links and references resolve; no work-log references"
