// Kernel choices of the CUDA backend: one value handed to make_cuda_backend() when a rank's
// backend is made, and from there to every kernel family. The defaults are the measured winners;
// a field exists only where a measured case favours the alternative. Settable per test and per
// benchmark; the server config carries it under the key "kernels" (engine/kernel_options_json.h).
#pragma once

namespace mlra {

struct KernelOptions {
  bool operator==(const KernelOptions&) const = default;
};

}  // namespace mlra
