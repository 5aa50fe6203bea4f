// Helpers of the CUDA-vs-CPU tests: fresh random host data (seed reported on failure), bf16
// rounding so both backends see identical inputs, tensors on either backend, NaN poisoning and
// relative L2 error. The CPU backend (f32, double-precision attention) is the oracle.
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "kernels/backend.h"
#include "kernels/cuda_backend.h"
#include "kernels/cuda_ops.h"

namespace mlra::gputest {

// One CPU backend (the oracle) and one CUDA backend on device 0, shared by every test.
struct BackendPair {
  std::unique_ptr<Backend> cpu = make_cpu_backend();
  std::unique_ptr<Backend> gpu = make_cuda_backend(0);
};
inline BackendPair& backends() {
  static BackendPair p;
  return p;
}
inline Backend& cpu() {
  return *backends().cpu;
}
inline Backend& gpu() {
  return *backends().gpu;
}

// CUDA devices this process sees (0 when the runtime finds none).
inline int gpu_count() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
}

inline uint32_t fresh_seed() {
  return std::random_device{}();
}

inline std::vector<float> random_vec(std::mt19937& rng, size_t n, float lo = -1.0f,
                                     float hi = 1.0f) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

inline float round_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  u &= 0xffff0000u;
  std::memcpy(&f, &u, 4);
  return f;
}

inline std::vector<float> rounded(std::vector<float> v, DType t) {
  if (t == DType::kBF16)
    for (auto& x : v) x = round_bf16(x);
  return v;
}

// Tensor of `shape` on backend b holding `data` (converted to dtype).
inline Tensor make(Backend& b, const std::vector<int64_t>& shape, DType dtype,
                   const std::vector<float>& data) {
  Tensor t = b.alloc(shape, dtype);
  b.upload_f32(t, data.data());
  return t;
}

inline Tensor make_i32(Backend& b, const std::vector<int32_t>& v) {
  Tensor t = b.alloc({int64_t(v.size())}, DType::kI32);
  if (!v.empty()) b.upload(t, v.data(), v.size() * 4);
  return t;
}

// Fills a device tensor with NaN so unwritten outputs show up.
inline void poison(Backend& b, const Tensor& t) {
  cuda::launch_fill(t.data, t.dtype, t.numel(), NAN, cuda_stream_of(b));
}

inline std::vector<float> download(Backend& b, const MatView& v) {
  std::vector<float> out(size_t(v.rows * v.cols));
  b.download_f32(v, out.data());
  return out;
}

inline double rel_l2(const std::vector<float>& got, const std::vector<float>& want) {
  if (got.size() != want.size()) return 1e30;
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) return 1e30;
    num += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
    den += double(want[i]) * want[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

inline bool all_finite(const std::vector<float>& v) {
  for (float x : v)
    if (!std::isfinite(x)) return false;
  return true;
}

constexpr double kBf16Tol = 1e-2;

}  // namespace mlra::gputest
