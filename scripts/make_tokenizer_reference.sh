#!/usr/bin/env bash
# Regenerates the reference ids of tests/data/tokenizer/corpus.json with an independent GPT-2 BPE
# (npm gpt-3-encoder@1.1.4, run by node in a scratch folder; nothing of it is committed).
# Usage: scripts/make_tokenizer_reference.sh [corpus.json]   (keeps each entry's text, rewrites ids)
# Entries where gpt-3-encoder's JavaScript regex differs from tiktoken's (JS \s includes U+FEFF,
# excludes U+0085) carry hand-checked "tiktoken_ids" and a "note"; these are kept, and the tests
# prefer them over "ids".
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
corpus="$(realpath "${1:-$root/tests/data/tokenizer/corpus.json}")"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
(cd "$scratch" && npm install --silent --no-audit --no-fund gpt-3-encoder@1.1.4 >/dev/null)
NODE_PATH="$scratch/node_modules" node -e '
  const fs = require("fs");
  const { encode } = require("gpt-3-encoder");
  const file = process.argv[1];
  const entries = JSON.parse(fs.readFileSync(file, "utf8"));
  const lines = entries.map((e) => JSON.stringify({ ...e, ids: encode(e.text) }));
  fs.writeFileSync(file, "[\n" + lines.join(",\n") + "\n]\n");
' "$corpus"
echo "wrote $(grep -c '"text"' "$corpus") entries to $corpus"
