// The tensor-core GEMV (kernels/gemv_mma.cu) and its SwiGLU form against double-precision host
// references: M 1..8, ragged N (tile edges at 8 and 16 rows) and K (32-k blocks, stages of 4),
// padded leading dimensions, strided and broadcast batches, alpha/beta, f32 and bf16 y,
// NaN-poisoned outputs and untouched padding (K tails and the 2.9B model's per-rank products:
// test_cuda_gemv_tail.cpp); a chain of PDL-launched decode-sized ops at 8 rows against the same ops
// synchronized, eager and replayed from a graph. Fresh random inputs (never zeros), seed reported
// on failure.
#include <catch2/catch.hpp>

#include <cmath>

#include "gpu_test_util.h"
#include "kernels/gemv.h"
#include "pdl_chain_check.h"

using namespace mlra;
using namespace mlra::gputest;

namespace {

struct Case {
  int64_t m, n, k, batch;
  bool x_shared;
  DType yt;
  float alpha, beta;
};

// y_b = alpha * x_b . w_b^T + beta * y_b on the device through `kernel`, checked against a double
// reference; every y element outside the outputs must stay as it was (NaN when poisoned).
void check_case(const Case& c, cuda::GemvKernel kernel, std::mt19937& rng) {
  Backend& g = *backends().gpu;
  const int64_t x_ld = c.k + 8, w_ld = c.k + 16, y_ld = c.n + 3;
  const int64_t x_stride = c.x_shared ? 0 : c.m * x_ld + 8, w_stride = c.n * w_ld + 8;
  const int64_t y_stride = c.m * y_ld + 5;
  const int64_t x_elems = (c.batch - 1) * x_stride + c.m * x_ld;
  const int64_t w_elems = (c.batch - 1) * w_stride + c.n * w_ld;
  const int64_t y_elems = (c.batch - 1) * y_stride + c.m * y_ld;
  const auto x = rounded(random_vec(rng, size_t(x_elems)), DType::kBF16);
  const auto w = rounded(random_vec(rng, size_t(w_elems)), DType::kBF16);
  const auto y0 = rounded(random_vec(rng, size_t(y_elems)), c.yt);
  Tensor xg = make(g, {x_elems}, DType::kBF16, x), wg = make(g, {w_elems}, DType::kBF16, w);
  Tensor yg = make(g, {y_elems}, c.yt, y0);
  const bool poisoned = c.beta == 0.0f;
  if (poisoned) poison(g, yg);
  const MatView xv{xg.data, DType::kBF16, c.m, c.k, x_ld};
  const MatView wv{wg.data, DType::kBF16, c.n, c.k, w_ld};
  const MatView yv{yg.data, c.yt, c.m, c.n, y_ld};
  REQUIRE(cuda::gemv_mma_supports(xv, x_stride, wv, w_stride, true, yv, y_stride, c.batch));
  cuda::launch_gemv(xv, x_stride, wv, w_stride, true, yv, y_stride, c.batch, c.alpha, c.beta,
                    cuda_stream_of(g), kernel);
  const auto got = download(g, {yg.data, c.yt, 1, y_elems, y_elems});
  std::vector<bool> is_out(size_t(y_elems), false);
  std::vector<float> got_out, want_out;
  for (int64_t b = 0; b < c.batch; ++b)
    for (int64_t m = 0; m < c.m; ++m)
      for (int64_t n = 0; n < c.n; ++n) {
        double acc = 0;
        for (int64_t k = 0; k < c.k; ++k)
          acc += double(x[size_t(b * x_stride + m * x_ld + k)]) *
                 double(w[size_t(b * w_stride + n * w_ld + k)]);
        const size_t i = size_t(b * y_stride + m * y_ld + n);
        is_out[i] = true;
        want_out.push_back(float(c.alpha * acc + (poisoned ? 0.0 : c.beta * double(y0[i]))));
        got_out.push_back(got[i]);
      }
  int64_t touched = 0;
  for (size_t i = 0; i < got.size(); ++i)
    if (!is_out[i] && !(poisoned ? std::isnan(got[i]) : got[i] == y0[i])) ++touched;
  INFO("m " << c.m << " n " << c.n << " k " << c.k << " batch " << c.batch << " x_shared "
            << c.x_shared << " y " << dtype_name(c.yt) << " alpha " << c.alpha << " beta " << c.beta
            << " kernel " << int(kernel));
  // f32 y: only the f32 accumulation differs from the reference (the tensor cores' adds may
  // truncate: up to ~1e-5 over K ~ 8K; any indexing error is O(1)).
  CHECK(rel_l2(got_out, want_out) < (c.yt == DType::kBF16 ? kBf16Tol : 1e-4));
  CHECK(touched == 0);
}

// silu(x . W1^T) * (x . W2^T) in double from the bf16-rounded products, as the kernel rounds.
std::vector<float> swiglu_reference(const std::vector<float>& x, const std::vector<float>& w,
                                    int64_t m, int64_t f, int64_t k) {
  std::vector<float> y(size_t(m * f));
  for (int64_t r = 0; r < m; ++r)
    for (int64_t n = 0; n < f; ++n) {
      double a = 0, b = 0;
      for (int64_t i = 0; i < k; ++i) {
        a += double(x[size_t(r * k + i)]) * w[size_t(n * k + i)];
        b += double(x[size_t(r * k + i)]) * w[size_t((f + n) * k + i)];
      }
      a = round_bf16(float(a)), b = round_bf16(float(b));
      y[size_t(r * f + n)] = float(a / (1.0 + std::exp(-a)) * b);
    }
  return y;
}

}  // namespace

TEST_CASE("tensor-core gemv matches a double reference over M, ragged sizes and batches",
          "[gpu][gemv][mma]") {
  const uint32_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937 rng(seed);
  struct NK {
    int64_t n, k;
  };
  // N around the 8- and 16-row tiles; K from one partial 32-k block to several 4-block stages
  // per warp of a 16-warp block (K 8 .. 8200).
  const std::vector<NK> sizes = {{1, 8},     {15, 40},    {17, 264}, {131, 1032},
                                 {37, 2056}, {4099, 256}, {9, 8200}};
  const float ab[3][2] = {{1.0f, 0.0f}, {0.75f, -1.25f}, {-1.5f, 0.5f}};
  int i = 0;
  for (int64_t m = 1; m <= 8; ++m)
    for (const NK& nk : sizes)
      for (int batching = 0; batching < 3; ++batching, ++i) {
        Case c{};
        c.m = m, c.n = nk.n, c.k = nk.k;
        c.batch = batching == 0 ? 1 : 3;
        c.x_shared = batching == 2;
        c.yt = i & 1 ? DType::kBF16 : DType::kF32;
        c.alpha = ab[i % 3][0], c.beta = ab[i % 3][1];
        check_case(c, cuda::GemvKernel::kMma, rng);
      }
}

TEST_CASE("tensor-core SwiGLU GEMV matches a double reference", "[gpu][gemv][mma][fused]") {
  const uint32_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937 rng(seed);
  Backend& g = *backends().gpu;
  struct FK {
    int64_t f, k;
  };
  // Ragged F around the 8-output tiles, and the 2.9B MLP at TP4 (F 2470) and TP1 (F 9880).
  for (const FK fk : {FK{1, 40}, FK{9, 1032}, FK{37, 3072}, FK{2470, 3072}, FK{9880, 3072}})
    for (int64_t m : {1, 2, 3, 4, 5, 6, 7, 8}) {
      if (fk.f == 9880 && m % 4 != 0) continue;  // the host reference is the slow part
      INFO("m " << m << " f " << fk.f << " k " << fk.k);
      const auto x = rounded(random_vec(rng, size_t(m * fk.k)), DType::kBF16);
      const auto w = rounded(random_vec(rng, size_t(2 * fk.f * fk.k), -0.1f, 0.1f), DType::kBF16);
      Tensor xg = make(g, {m, fk.k}, DType::kBF16, x);
      Tensor wg = make(g, {2 * fk.f, fk.k}, DType::kBF16, w);
      Tensor yg = g.alloc({m, fk.f}, DType::kBF16);
      poison(g, yg);
      cuda::launch_gemv_swiglu(as_mat(xg, fk.k), as_mat(wg, fk.k), as_mat(yg, fk.f),
                               cuda_stream_of(g), cuda::GemvKernel::kMma);
      const auto got = download(g, as_mat(yg, fk.f));
      CHECK(all_finite(got));
      CHECK(rel_l2(got, swiglu_reference(x, w, m, fk.f, fk.k)) < kBf16Tol);
    }
}

// The PDL chain (pdl_chain_check.h) at 8 rows through the tensor-core kernels.
TEST_CASE("PDL chains through the tensor-core GEMV compute what synchronized ops compute",
          "[gpu][gemv][mma][pdl]") {
  const uint32_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937 rng(seed);
  KernelOptions o;
  o.gemv_max_rows = KernelOptions::kMaxGemvRows;
  const std::unique_ptr<Backend> own = make_cuda_backend(0, o);
  check_pdl_chain(*own, rng, 8, 3072, 2048);
}
