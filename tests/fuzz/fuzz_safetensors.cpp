// libFuzzer: the safetensors index (models/safetensors_file.h) on arbitrary file bytes, then a
// read of every tensor. Only CheckpointError may come out; every tensor's bytes must lie inside
// the input and hold exactly numel * dtype_size bytes.
#include <cstdlib>

#include "models/safetensors_file.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mlra;
  try {
    const auto tensors = index_safetensors(fuzz::as_bytes(data, size), "fuzz.safetensors");
    for (const TensorInfo& t : tensors) {
      const auto* begin = reinterpret_cast<const uint8_t*>(t.data);
      const uint64_t bytes = uint64_t(t.numel()) * dtype_size(t.dtype);
      if (begin < data || begin + bytes > data + size) std::abort();
    }
    fuzz::read_every_tensor(tensors);
  } catch (const CheckpointError&) {
  }
  return 0;
}
