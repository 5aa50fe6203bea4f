// A chain of decode-sized ops launched with programmatic dependent launch, each reading what the
// one before wrote: a kernel that skipped its grid dependency wait would read stale data. 24
// layers of y = x . W, x = RMSNorm(y) * g, h = SwiGLU(x), y = h . W_back, x = RMSNorm(x + y); run
// synchronized after every op, eagerly back to back, and replayed from a CUDA graph, the results
// must be bitwise equal (the kernels are deterministic).
#pragma once

#include <catch2/catch.hpp>

#include <random>

#include "gpu_test_util.h"

namespace mlra::gputest {

// The chain at m rows (x [m, k], W [k, k], [W1; W2] [2f, k], W_back [k, f]) on `gpu`.
inline void check_pdl_chain(Backend& gpu, std::mt19937& rng, int64_t m, int64_t k, int64_t f) {
  const int64_t layers = 24;
  Tensor w = make(gpu, {k, k}, DType::kBF16, random_vec(rng, size_t(k * k), -0.05f, 0.05f));
  Tensor w12 =
      make(gpu, {2 * f, k}, DType::kBF16, random_vec(rng, size_t(2 * f * k), -0.05f, 0.05f));
  Tensor w_back = make(gpu, {k, f}, DType::kBF16, random_vec(rng, size_t(k * f), -0.05f, 0.05f));
  Tensor gain = make(gpu, {k}, DType::kBF16, random_vec(rng, size_t(k), 0.5f, 1.5f));
  const auto x0 = random_vec(rng, size_t(m * k));
  Tensor x = gpu.alloc({m, k}, DType::kBF16), y = gpu.alloc({m, k}, DType::kF32);
  Tensor h = gpu.alloc({m, f}, DType::kBF16);
  auto ops = [&](bool sync) {
    for (int64_t i = 0; i < layers; ++i) {
      gpu.linear(as_mat(x, k), as_mat(w, k), as_mat(y, k), 1.0f, 0.0f);
      if (sync) gpu.synchronize();
      gpu.rms_norm(as_mat(y, k), gain, 1e-5f, 1.0f, as_mat(x, k));
      if (sync) gpu.synchronize();
      gpu.linear_swiglu(as_mat(x, k), as_mat(w12, k), as_mat(h, f));
      if (sync) gpu.synchronize();
      gpu.linear(as_mat(h, f), as_mat(w_back, f), as_mat(y, k), 1.0f, 0.0f);
      if (sync) gpu.synchronize();
      gpu.add_rms_norm(as_mat(x, k), as_mat(y, k), gain, 1e-5f, as_mat(x, k));
      if (sync) gpu.synchronize();
    }
  };
  gpu.upload_f32(x, x0.data());
  ops(true);
  const auto want = download(gpu, as_mat(x, k));
  REQUIRE(all_finite(want));
  gpu.upload_f32(x, x0.data());
  ops(false);
  CHECK(download(gpu, as_mat(x, k)) == want);
  gpu.upload_f32(x, x0.data());
  gpu.begin_capture();
  ops(false);
  auto graph = gpu.end_capture();
  for (int rep = 0; rep < 3; ++rep) {
    gpu.upload_f32(x, x0.data());
    graph->replay();
    CHECK(download(gpu, as_mat(x, k)) == want);
  }
}

}  // namespace mlra::gputest
