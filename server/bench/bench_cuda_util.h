// Timing helpers every GPU benchmark shares (CUDA builds only): device buffers, medians, event
// timing after warm-up, and the device-to-device copy bandwidth each table is measured against.
#pragma once

#ifdef MLRA_HAVE_CUDA
#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <vector>

#include "kernels/cuda_check.h"

namespace mlra::bench {

struct DeviceBuffer {
  void* p = nullptr;
  explicit DeviceBuffer(size_t bytes) {
    MLRA_CUDA_CHECK(cudaMalloc(&p, std::max<size_t>(bytes, 256)));
  }
  ~DeviceBuffer() { cudaFree(p); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

inline float median(std::vector<float> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Median time (ms) of `fn` enqueued on `stream`, timed with events after 3 warm-up calls.
template <class Fn>
float time_ms(cudaStream_t stream, int reps, Fn fn) {
  cudaEvent_t a, b;
  MLRA_CUDA_CHECK(cudaEventCreate(&a));
  MLRA_CUDA_CHECK(cudaEventCreate(&b));
  for (int i = 0; i < 3; ++i) fn();
  std::vector<float> ms;
  for (int i = 0; i < reps; ++i) {
    MLRA_CUDA_CHECK(cudaEventRecord(a, stream));
    fn();
    MLRA_CUDA_CHECK(cudaEventRecord(b, stream));
    MLRA_CUDA_CHECK(cudaEventSynchronize(b));
    float t = 0;
    MLRA_CUDA_CHECK(cudaEventElapsedTime(&t, a, b));
    ms.push_back(t);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return median(ms);
}

// Device-to-device copy of 1 GiB of random data: bytes read + written per second (GB/s).
double copy_bandwidth_gbs(cudaStream_t stream);

}  // namespace mlra::bench
#endif
