// Helpers of the FP8 cache GPU tests: one FP8 cache on both backends (same layout and pages) and
// bf16-exact rows whose values span the E4M3 range (normal values, one outlier per row, rows of
// tiny values that quantize to subnormal codes, all-zero groups).
#pragma once

#include <cuda_runtime.h>

#include <cstring>
#include <random>
#include <vector>

#include "gpu_test_util.h"
#include "kernels/fp8_e4m3.h"
#include "kernels/paged_attention.h"

namespace mlra::gputest {

// An FP8 cache of `pages` pages on both backends, zero-filled so untouched bytes compare equal.
struct Fp8Pair {
  Fp8CacheLayout layout;
  int32_t page_size;
  int64_t pages;
  Tensor cpu, gpu;
  Fp8Pair(Fp8CacheLayout l, int32_t ps, int64_t n) : layout(l), page_size(ps), pages(n) {
    const int64_t bytes = n * l.page_bytes(ps);
    cpu = backends().cpu->alloc({bytes}, DType::kU8);
    gpu = backends().gpu->alloc({bytes}, DType::kU8);
    std::memset(cpu.data, 0, size_t(bytes));
    if (cudaMemset(gpu.data, 0, size_t(bytes)) != cudaSuccess) throw std::runtime_error("memset");
  }
  PagedCacheView view(const Tensor& t) const {
    PagedCacheView v{t.data, DType::kU8, pages, page_size, int32_t(layout.values())};
    v.encoding = CacheEncoding::kFp8E4M3;
    v.fp8 = layout;
    return v;
  }
  std::vector<uint8_t> gpu_bytes() const {
    std::vector<uint8_t> out(gpu.bytes());
    backends().gpu->synchronize();
    if (cudaMemcpy(out.data(), gpu.data, out.size(), cudaMemcpyDeviceToHost) != cudaSuccess)
      throw std::runtime_error("memcpy");
    return out;
  }
  std::vector<uint8_t> cpu_bytes() const {
    const auto* p = static_cast<const uint8_t*>(cpu.data);
    return {p, p + cpu.bytes()};
  }
  // The CPU cache's bytes onto the GPU.
  void upload() const {
    if (cudaMemcpy(gpu.data, cpu.data, cpu.bytes(), cudaMemcpyHostToDevice) != cudaSuccess)
      throw std::runtime_error("memcpy");
  }
};

// bf16-exact values spanning the range: normal, an outlier per row, tiny values, a zero group.
inline std::vector<float> spanning_rows(std::mt19937& rng, int64_t rows, int64_t cols, int64_t gw) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(size_t(rows * cols));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      float x = normal(rng);
      if (r % 3 == 1) x *= 1e-30f;         // tiny (E4M3 subnormals after scaling)
      if (c == (r * 7) % cols) x *= 3e3f;  // an outlier
      if (r % 4 == 2 && c < gw) x = 0.0f;  // an all-zero first group
      v[size_t(r * cols + c)] = round_bf16(x);
    }
  return v;
}

}  // namespace mlra::gputest
