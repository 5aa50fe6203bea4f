// The small-M GEMV (kernels/gemv.h) against a double-precision host reference: M 1..8, both
// weight layouts, ragged N and K (K tails: test_cuda_gemv_tail.cpp), padded leading dimensions,
// strided and broadcast batches, alpha/beta, NaN-poisoned outputs and untouched padding. Then
// Backend::linear_batched on the CUDA backend (GEMV and cuBLAS paths, the gemv_max_rows kernel
// option choosing between them) against the CPU backend, and a graph replay against its eager
// twin. Fresh random inputs, seed reported on failure.
#include <catch2/catch.hpp>

#include <cmath>

#include "gpu_test_util.h"
#include "kernels/gemv.h"

using namespace mlra;
using namespace mlra::gputest;

namespace {

struct Shape {
  int64_t m, n, k, batch;
  bool out_by_in, x_shared;  // x_shared: x_stride 0 (one x for every batch entry)
  DType xt, yt;
  float alpha, beta;
};

// Padded leading dimensions and batch strides, so a kernel that ignores them fails.
struct Layout {
  int64_t x_ld, x_stride, w_rows, w_cols, w_ld, w_stride, y_ld, y_stride;
  int64_t x_elems, w_elems, y_elems;
};

Layout layout_of(const Shape& s) {
  Layout l{};
  l.x_ld = s.k + 8;  // out_by_in: K % 8 == 0, so x rows stay 16-byte aligned
  l.x_stride = s.x_shared ? 0 : s.m * l.x_ld + 8;
  l.w_rows = s.out_by_in ? s.n : s.k;
  l.w_cols = s.out_by_in ? s.k : s.n;
  l.w_ld = (l.w_cols + 7) / 8 * 8 + 8;
  l.w_stride = l.w_rows * l.w_ld + 16;
  l.y_ld = s.n + 3;  // y needs no alignment: odd ld and stride
  l.y_stride = s.m * l.y_ld + 5;
  l.x_elems = (s.batch - 1) * l.x_stride + s.m * l.x_ld;
  l.w_elems = (s.batch - 1) * l.w_stride + l.w_rows * l.w_ld;
  l.y_elems = (s.batch - 1) * l.y_stride + s.m * l.y_ld;
  return l;
}

// Runs one GEMV on the device and checks it against the double reference: outputs within
// tolerance, every other element of the y buffer unchanged (still NaN when poisoned).
void check_direct(const Shape& s, std::mt19937& rng) {
  const Layout l = layout_of(s);
  const auto x = rounded(random_vec(rng, size_t(l.x_elems)), s.xt);
  const auto w = rounded(random_vec(rng, size_t(l.w_elems)), DType::kBF16);
  const auto y0 = rounded(random_vec(rng, size_t(l.y_elems)), s.yt);
  Backend& g = gpu();
  Tensor xg = make(g, {l.x_elems}, s.xt, x), wg = make(g, {l.w_elems}, DType::kBF16, w);
  Tensor yg = make(g, {l.y_elems}, s.yt, y0);
  const bool poisoned = s.beta == 0.0f;
  if (poisoned) poison(g, yg);
  const MatView xv{xg.data, s.xt, s.m, s.k, l.x_ld};
  const MatView wv{wg.data, DType::kBF16, l.w_rows, l.w_cols, l.w_ld};
  const MatView yv{yg.data, s.yt, s.m, s.n, l.y_ld};
  REQUIRE(
      cuda::gemv_supports(xv, l.x_stride, wv, l.w_stride, s.out_by_in, yv, l.y_stride, s.batch));
  cuda::launch_gemv(xv, l.x_stride, wv, l.w_stride, s.out_by_in, yv, l.y_stride, s.batch, s.alpha,
                    s.beta, cuda_stream_of(g));
  const auto got = download(g, {yg.data, s.yt, 1, l.y_elems, l.y_elems});

  std::vector<bool> is_out(size_t(l.y_elems), false);
  std::vector<float> got_out, want_out;
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t m = 0; m < s.m; ++m)
      for (int64_t n = 0; n < s.n; ++n) {
        double acc = 0;
        for (int64_t k = 0; k < s.k; ++k) {
          const double xk = x[size_t(b * l.x_stride + m * l.x_ld + k)];
          const int64_t wi = s.out_by_in ? n * l.w_ld + k : k * l.w_ld + n;
          acc += xk * double(w[size_t(b * l.w_stride + wi)]);
        }
        const size_t i = size_t(b * l.y_stride + m * l.y_ld + n);
        is_out[i] = true;
        want_out.push_back(float(s.alpha * acc + (poisoned ? 0.0 : s.beta * double(y0[i]))));
        got_out.push_back(got[i]);
      }
  int64_t touched = 0;
  for (size_t i = 0; i < got.size(); ++i)
    if (!is_out[i] && !(poisoned ? std::isnan(got[i]) : got[i] == y0[i])) ++touched;
  // f32 y: the FMA kernel's f32 sums, or the tensor cores' (launch_gemv picks them for bf16 x of
  // 2+ rows over w [N, K]), whose adds may truncate.
  const bool mma = s.xt == DType::kBF16 && s.out_by_in && s.m >= 2;
  const double tol = s.yt == DType::kBF16 ? kBf16Tol : mma ? 1e-4 : 2e-5;
  INFO("m " << s.m << " n " << s.n << " k " << s.k << " batch " << s.batch << " out_by_in "
            << s.out_by_in << " x_shared " << s.x_shared << " x " << dtype_name(s.xt) << " y "
            << dtype_name(s.yt) << " alpha " << s.alpha << " beta " << s.beta);
  CHECK(rel_l2(got_out, want_out) < tol);
  CHECK(touched == 0);
}

}  // namespace

TEST_CASE("gemv matches a double reference over M, layouts, ragged sizes and batches",
          "[gpu][gemv]") {
  const uint32_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937 rng(seed);
  struct NK {
    int64_t n, k;
  };
  // out_by_in K % 8 == 0; sizes chosen to reach thread-group widths 4..128 (K 8 .. 2056).
  const std::vector<NK> out_by_in = {{1, 8},     {131, 64},  {517, 200},
                                     {37, 1032}, {37, 2056}, {4099, 256}};
  const std::vector<NK> in_by_out = {{5, 1}, {131, 129}, {517, 200}, {64, 1000}, {3001, 67}};
  const float ab[3][2] = {{1.0f, 0.0f}, {0.75f, -1.25f}, {-1.5f, 0.5f}};
  int i = 0;
  for (int64_t m : {1, 2, 3, 5, 8})
    for (bool obi : {true, false})
      for (const NK& nk : obi ? out_by_in : in_by_out)
        for (int batching = 0; batching < 3; ++batching, ++i) {
          Shape s{};
          s.m = m, s.n = nk.n, s.k = nk.k, s.out_by_in = obi;
          s.batch = batching == 0 ? 1 : batching == 1 ? 3 : 4;
          s.x_shared = batching == 2;
          s.xt = i & 1 ? DType::kF32 : DType::kBF16;
          s.yt = i & 2 ? DType::kBF16 : DType::kF32;
          s.alpha = ab[i % 3][0], s.beta = ab[i % 3][1];
          check_direct(s, rng);
        }
}

TEST_CASE("gemv refuses what it cannot vectorize; the backend falls back to cuBLAS",
          "[gpu][gemv]") {
  const uint32_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937 rng(seed);
  Backend& g = gpu();
  const int64_t m = 3, k = 13, n = 40;  // out_by_in, rows at ld 13: not 16-byte aligned
  const auto x = rounded(random_vec(rng, m * k), DType::kBF16);
  const auto w = rounded(random_vec(rng, n * k), DType::kBF16);
  Tensor xg = make(g, {m, k}, DType::kBF16, x), wg = make(g, {n, k}, DType::kBF16, w);
  Tensor yg = g.alloc({m, n}, DType::kF32);
  poison(g, yg);
  const MatView xv = as_mat(xg, k), wv = as_mat(wg, k), yv = as_mat(yg, n);
  CHECK_FALSE(cuda::gemv_supports(xv, 0, wv, 0, true, yv, 0, 1));
  CHECK_THROWS_AS(cuda::launch_gemv(xv, 0, wv, 0, true, yv, 0, 1, 1.0f, 0.0f, cuda_stream_of(g)),
                  std::invalid_argument);
  CHECK_FALSE(cuda::gemv_supports({xg.data, DType::kBF16, 9, 1, 1}, 0,
                                  {wg.data, DType::kBF16, 1, 1, 8}, 0, true,
                                  {yg.data, DType::kF32, 9, 1, 1}, 0, 1));  // M = 9
  g.linear(xv, wv, yv, 1.0f, 0.0f);
  Tensor xc = make(cpu(), {m, k}, DType::kF32, x), wc = make(cpu(), {n, k}, DType::kF32, w);
  Tensor yc = cpu().alloc({m, n}, DType::kF32);
  cpu().linear(as_mat(xc, k), as_mat(wc, k), as_mat(yc, n), 1.0f, 0.0f);
  CHECK(rel_l2(download(g, yv), download(cpu(), as_mat(yc, n))) < 1e-5);
}

TEST_CASE("cuda linear_batched on small M matches the cpu backend; gemv_max_rows routes it",
          "[gpu][gemv][options]") {
  // Rows up to the option take a GEMV (default 8; 0: cuBLAS only); 9 is always cuBLAS.
  const uint32_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937 rng(seed);
  const int64_t batch = 3, k = 96, n = 72;
  for (int rows : {1, 0, KernelOptions::kMaxGemvRows}) {
    KernelOptions o;
    o.gemv_max_rows = rows;
    std::unique_ptr<Backend> own = make_cuda_backend(0, o);
    for (int64_t m : {1, 4, 8, 9})
      for (bool out_by_in : {true, false})
        for (int64_t x_stride : {int64_t(0), k})
          for (DType xt : {DType::kBF16, DType::kF32})
            for (DType yt : {DType::kBF16, DType::kF32}) {
              // x and y: batch blocks side by side in one row ([m, batch*k], [m, batch*n]).
              const int64_t xw = batch * k, yw = batch * n;
              const int64_t wr = out_by_in ? n : k, wc = out_by_in ? k : n;
              const auto x = rounded(random_vec(rng, m * xw), xt);
              const auto w = rounded(random_vec(rng, batch * wr * wc), DType::kBF16);
              const auto y0 = rounded(random_vec(rng, m * yw), yt);
              const float beta = x_stride ? -0.5f : 0.0f;
              // direct: the GEMV kernel itself, bypassing the backend's choice.
              auto run = [&](Backend& b, DType xd, DType wd, DType yd, bool direct) {
                Tensor xt_ = make(b, {m, xw}, xd, x), wt = make(b, {batch * wr, wc}, wd, w);
                Tensor yt_ = make(b, {m, yw}, yd, y0);
                if (beta == 0.0f && b.kind() == DeviceKind::kCuda) poison(b, yt_);
                const MatView xv = as_mat(xt_, xw).cols_slice(0, k), wv{wt.data, wd, wr, wc, wc};
                const MatView yv = as_mat(yt_, yw).cols_slice(0, n);
                if (direct)
                  cuda::launch_gemv(xv, x_stride, wv, wr * wc, out_by_in, yv, n, batch, 1.5f, beta,
                                    cuda_stream_of(b));
                else
                  b.linear_batched(xv, x_stride, wv, wr * wc, out_by_in, yv, n, batch, 1.5f, beta);
                return download(b, as_mat(yt_, yw));
              };
              INFO("gemv_max_rows " << rows << " m " << m << " out_by_in " << out_by_in
                                    << " x_stride " << x_stride << " x " << dtype_name(xt) << " y "
                                    << dtype_name(yt));
              const double tol = yt == DType::kF32 && xt == DType::kBF16 ? 1e-5 : kBf16Tol;
              const auto got = run(*own, xt, DType::kBF16, yt, false);
              CHECK(rel_l2(got, run(cpu(), DType::kF32, DType::kF32, DType::kF32, false)) < tol);
              // f32 x and y: cuBLAS sees x rounded to bf16, the FMA GEMV reads it as is, so the
              // two paths differ and the result shows which one ran. From two rows the backend
              // takes only the tensor-core GEMV (bf16 x over w [N, K]); f32 x goes to cuBLAS.
              if (xt == DType::kF32 && yt == DType::kF32 && m <= cuda::kGemvMaxRows)
                CHECK((got == run(*own, xt, DType::kBF16, yt, true)) == (m <= rows && m == 1));
              // bf16 x, f32 y over w [N, K]: the tensor-core GEMV from two rows, its f32 sums
              // in another order than cuBLAS's.
              if (xt == DType::kBF16 && yt == DType::kF32 && out_by_in && m >= 2 &&
                  m <= cuda::kGemvMaxRows)
                CHECK((got == run(*own, xt, DType::kBF16, yt, true)) == (m <= rows));
            }
  }
}

TEST_CASE("gemv in a CUDA graph replays what the eager call computes", "[gpu][gemv]") {
  const uint32_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937 rng(seed);
  Backend& g = gpu();
  const int64_t m = 2, k = 3072, n = 1000;
  Tensor xg = make(g, {m, k}, DType::kBF16, rounded(random_vec(rng, m * k), DType::kBF16));
  Tensor wg = make(g, {n, k}, DType::kBF16, rounded(random_vec(rng, n * k), DType::kBF16));
  Tensor eager = g.alloc({m, n}, DType::kF32), replayed = g.alloc({m, n}, DType::kF32);
  poison(g, eager);
  poison(g, replayed);
  g.linear(as_mat(xg, k), as_mat(wg, k), as_mat(eager, n), 1.0f, 0.0f);
  g.begin_capture();
  g.linear(as_mat(xg, k), as_mat(wg, k), as_mat(replayed, n), 1.0f, 0.0f);
  std::unique_ptr<CapturedOps> graph = g.end_capture();
  graph->replay();
  const auto a = download(g, as_mat(eager, n)), b = download(g, as_mat(replayed, n));
  REQUIRE(all_finite(a));
  CHECK(a == b);
}
