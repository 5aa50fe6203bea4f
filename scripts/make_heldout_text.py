#!/usr/bin/env python3
"""Writes tests/data/heldout/austen.txt: six held-out chapters of the default model's corpus (one
per Austen novel; models/default/README.md), for `mlra-serve perplexity --text` and the FP8 cache
accuracy check (`mlra-serve kv-cache-compare`). The chapters are documents the training split never
saw (corpus_extract.py: index mod 20 == 7); they are joined by "<|endoftext|>", which the
perplexity command turns into the EOT token the model saw before every document (it puts one
before the first as well), so the tokens are those the held-out token file holds for them. Input: the Debian
package r-cran-janeaustenr 1.0.0-1 (public-domain texts, MIT package), e.g. fetched with
`apt-get download r-cran-janeaustenr=1.0.0-1 && dpkg-deb -x r-cran-janeaustenr_*.deb austen`.
Standard library only."""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import corpus_extract  # noqa: E402

# Held-out Austen chapters (their index in corpus_extract's document order), one per novel.
kChapters = [7, 67, 107, 147, 187, 247]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--austen-rdb", required=True, help="janeaustenr/data/Rdata.rdb")
    ap.add_argument("--out", required=True, help="output text file")
    args = ap.parse_args()
    docs = corpus_extract.austen_documents(args.austen_rdb)
    texts = []
    for i in kChapters:
        if i % corpus_extract.kHeldOutEvery != corpus_extract.kHeldOutPhase:
            raise SystemExit(f"document {i} is not in the held-out split")
        texts.append(docs[i]["text"])
        print(f"{i}: {docs[i]['name']}, {len(docs[i]['text'])} characters")
    with open(args.out, "w", encoding="utf-8") as f:
        f.write("<|endoftext|>".join(texts))


if __name__ == "__main__":
    main()
