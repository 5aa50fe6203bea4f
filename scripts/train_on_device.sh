#!/usr/bin/env bash
# Trains the default MLRA-4 model and its MLA and GQA siblings on the GPU machine in one run (a time
# budget per model, TRAIN_BUDGET_S), then packs the three release-format folders for the trip back:
# one tar.xz split into parts of < 15 MiB (the device returns at most 8 files of 16 MiB each). Needs
# .device/train/ (scripts/prepare_corpus.sh) carried along. Writes everything into $OUT.
# Rejoin here: cat models.tar.xz.part* | xz -d | tar x -C DEST
set -euo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?OUT must name the output folder}"
export PYTHONUNBUFFERED=1
py="${PYTHON:-python3}"
budget="${TRAIN_BUDGET_S:-140}"  # seconds of optimizer steps per model
work="${TRAIN_WORK_DIR:-/tmp/mlra_default_models}"
rm -rf "$work"
mkdir -p "$work"
"$py" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
"$py" scripts/train_default_model.py --out-dir "$work" --time-budget-s "$budget" --steps 20000 "$@" \
  2>&1 | tee "$OUT/train.log"
cp "$work/summary.json" "$OUT/summary.json"
variants=(mlra_4 mla gqa)
pack() {
  rm -f "$OUT"/models.tar.xz.part*
  if command -v xz >/dev/null; then
    tar -C "$work" -cf - "$@" | xz -T0 -6 >"$work/models.tar.xz"
  else  # same format through Python's lzma, slower
    (cd "$work" && "$py" -c 'import sys, tarfile
with tarfile.open("models.tar.xz", "w:xz", preset=6) as t:
    [t.add(d) for d in sys.argv[1:]]' "$@")
  fi
  split -b 15M -d -a 1 "$work/models.tar.xz" "$OUT/models.tar.xz.part"
}
pack "${variants[@]}"
# 64 MiB may come back in all; drop the GQA sibling rather than lose everything.
if [ "$(du -cb "$OUT"/* | tail -1 | cut -f1)" -gt $((62 * 1024 * 1024)) ]; then
  echo "packed models exceed 62 MiB; leaving out gqa" | tee -a "$OUT/train.log"
  pack mlra_4 mla
fi
ls -la "$OUT" "$work"/*/
