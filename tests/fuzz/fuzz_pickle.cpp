// libFuzzer: the restricted unpickler (models/pickle_reader.h) on arbitrary data.pkl bytes.
// Only CheckpointError may come out; every tensor it returns must lie inside its storage.
#include <cstdlib>

#include "models/pickle_reader.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mlra;
  try {
    for (const PickledTensor& t : unpickle_state_dict(fuzz::as_bytes(data, size), "fuzz.pkl")) {
      if (t.shape.size() != t.strides.size() || t.storage_offset < 0) std::abort();
      int64_t last = t.storage_offset, numel = 1;
      for (size_t d = 0; d < t.shape.size(); ++d) {
        numel *= t.shape[d];
        if (t.shape[d] > 0) last += (t.shape[d] - 1) * t.strides[d];
      }
      if (numel > 0 && last >= t.storage.numel) std::abort();
    }
  } catch (const CheckpointError&) {
  }
  return 0;
}
