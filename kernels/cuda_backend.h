// CUDA-specific access to a backend made by make_cuda_backend(): its stream, for code that must
// order its own device work (NCCL collectives, benchmarks, tests) with the backend's ops.
#pragma once

#include <cuda_runtime.h>

#include "kernels/backend.h"

namespace mlra {

// The stream every op of `b` is enqueued on; throws std::invalid_argument for a non-CUDA backend.
cudaStream_t cuda_stream_of(Backend& b);

}  // namespace mlra
