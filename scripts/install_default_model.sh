#!/usr/bin/env bash
# Installs what scripts/train_on_device.sh brought back: rejoins models.tar.xz.part*, puts the
# MLRA-4 model into models/default/ (committed) and the MLA / GQA siblings into .device/models/
# (ignored by git; rebuild them with train_on_device.sh), then cross-checks all three against the
# float64 reference. Usage: scripts/install_default_model.sh DIR_WITH_PARTS
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
parts="${1:?usage: install_default_model.sh DIR_WITH_PARTS}"
tmp="$(mktemp -d)"
cat "$parts"/models.tar.xz.part* | xz -d | tar x -C "$tmp"
rm -f "$root"/models/default/*.bin "$root"/models/default/*.json
cp "$tmp"/mlra_4/* "$root/models/default/"
mkdir -p "$root/.device/models"
for v in mla gqa; do
  if [ -d "$tmp/$v" ]; then rm -rf "$root/.device/models/$v" && cp -r "$tmp/$v" "$root/.device/models/"; fi
done
[ -f "$parts/summary.json" ] && cp "$parts/summary.json" "$root/.device/models/summary.json"
dirs=("$root/models/default")
for v in mla gqa; do [ -d "$root/.device/models/$v" ] && dirs+=("$root/.device/models/$v"); done
/usr/bin/python3 "$root/scripts/check_trained_model.py" "${dirs[@]}"
rm -rf "$tmp"
