// libFuzzer: the zip directory reader and the torch .bin index over it (zip_archive.h,
// torch_bin_file.h) on arbitrary file bytes: every entry's CRC-32 is checked, every indexed
// tensor read. Only CheckpointError may come out, and every span must lie inside the input.
#include <cstdlib>

#include "models/checkpoint_integrity.h"
#include "models/torch_bin_file.h"
#include "models/zip_archive.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mlra;
  const auto bytes = fuzz::as_bytes(data, size);
  auto inside = [&](std::span<const std::byte> s) {
    return s.data() >= bytes.data() && s.data() + s.size() <= bytes.data() + bytes.size();
  };
  try {
    ZipArchive zip(bytes, "fuzz.zip");
    for (const auto& name : zip.names()) {
      if (!inside(zip.entry(name))) std::abort();
      try {
        zip.verify(name);
      } catch (const CheckpointError&) {
      }
    }
  } catch (const CheckpointError&) {
  }
  try {
    TorchBinIndex index = index_torch_bin(bytes, "fuzz.bin");
    for (const auto& r : index.regions)
      if (!inside(r.bytes)) std::abort();
    try {
      verify_regions(index.regions, 0, 1, 1);
    } catch (const CheckpointError&) {
    }
    fuzz::read_every_tensor(index.tensors);
  } catch (const CheckpointError&) {
  }
  return 0;
}
