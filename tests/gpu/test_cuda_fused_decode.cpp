// The decode path's fused CUDA ops against their CPU compositions (linear_swiglu: linear +
// silu_mul; latent_cache_write: rms_norm_groups + rope + cache_write) on random inputs, and the
// programmatic-dependent-launch chain: ops that overlap their launches must compute exactly what
// they compute with a synchronization between every op, eagerly and replayed from a graph.
#include <catch2/catch.hpp>

#include <algorithm>
#include <numeric>

#include "gpu_test_util.h"
#include "kernels/gemv.h"
#include "pdl_chain_check.h"

using namespace mlra;
using namespace mlra::gputest;

TEST_CASE("cuda linear_swiglu (GEMV epilogue) matches the cpu linear + silu_mul",
          "[gpu][ops][gemv][fused]") {
  auto& [cpu, gpu] = backends();
  const uint32_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937 rng(seed);
  // The defaults fuse every row count the GEMV takes; gemv_max_rows 0 runs the composition (a
  // cuBLAS product, then silu_mul) on the device.
  KernelOptions no_gemv;
  no_gemv.gemv_max_rows = 0;
  const std::unique_ptr<Backend> gpu_composed = make_cuda_backend(0, no_gemv);
  for (int64_t m : {1, 2, 3, 8, 9})
    for (int64_t k : {40, 1024, 3072})
      for (int64_t f : {1, 37, 256, 1235}) {
        INFO("m " << m << " k " << k << " f " << f);
        const auto x = rounded(random_vec(rng, m * k), DType::kBF16);
        const auto w = rounded(random_vec(rng, 2 * f * k, -0.1f, 0.1f), DType::kBF16);
        auto run = [&](Backend& b, bool direct) {
          const DType t = b.kind() == DeviceKind::kCuda ? DType::kBF16 : DType::kF32;
          Tensor xt = make(b, {m, k}, t, x), wt = make(b, {2 * f, k}, t, w);
          Tensor y = b.alloc({m, f}, t);
          if (b.kind() == DeviceKind::kCuda) poison(b, y);
          // direct: the fused kernel itself at every M it takes (a backend fuses M <= its
          // gemv_max_rows kernel option).
          if (direct)
            cuda::launch_gemv_swiglu(as_mat(xt, k), as_mat(wt, k), as_mat(y, f), cuda_stream_of(b));
          else
            b.linear_swiglu(as_mat(xt, k), as_mat(wt, k), as_mat(y, f));
          return download(b, as_mat(y, f));
        };
        const auto want = run(*cpu, false);
        const auto got = run(*gpu, false);
        CHECK(all_finite(got));
        CHECK(rel_l2(got, want) < kBf16Tol);
        const auto composed = run(*gpu_composed, false);
        CHECK(all_finite(composed));
        CHECK(rel_l2(composed, want) < kBf16Tol);
        if (m <= cuda::kGemvMaxRows) {
          Tensor xg = gpu->alloc({m, k}, DType::kBF16), wg = gpu->alloc({2 * f, k}, DType::kBF16);
          Tensor yg = gpu->alloc({m, f}, DType::kBF16);
          REQUIRE(cuda::gemv_swiglu_supports(as_mat(xg, k), as_mat(wg, k), as_mat(yg, f)));
          const auto fused = run(*gpu, true);
          CHECK(all_finite(fused));
          CHECK(rel_l2(fused, want) < kBf16Tol);
          // The default backend fuses every row count up to kMaxGemvRows (the fused kernel is
          // deterministic, so fusing shows as bitwise equality).
          CHECK(got == fused);
        }
      }
}

TEST_CASE("cuda latent_cache_write matches the cpu rms_norm_groups + rope + cache_write",
          "[gpu][ops][fused]") {
  auto& [cpu, gpu] = backends();
  const uint32_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937 rng(seed);
  const int32_t pages = 5, page_size = 16, capacity = pages * page_size;
  struct Shape {
    int64_t groups, g, rot, extra;  // extra: cache row columns past the entry
  };
  for (const Shape s :
       {Shape{4, 128, 64, 0}, Shape{1, 512, 64, 8}, Shape{3, 40, 16, 0}, Shape{0, 96, 32, 0}})
    for (const int64_t T : {int64_t(1), int64_t(5), int64_t(17)}) {
      const int64_t lat = s.groups ? s.groups * s.g : s.g, cols = lat + s.rot;
      const int64_t width = cols + s.extra, ld = cols + 24;  // the row is a slice of a wider row
      INFO("groups " << s.groups << " g " << s.g << " rot " << s.rot << " tokens " << T);
      std::vector<int32_t> all(capacity), slots(static_cast<size_t>(T)), pos(slots.size());
      std::iota(all.begin(), all.end(), 0);
      std::shuffle(all.begin(), all.end(), rng);
      std::copy_n(all.begin(), T, slots.begin());
      for (auto& p : pos) p = int32_t(rng() % 70000);
      const auto rows = rounded(random_vec(rng, T * ld, -2.0f, 2.0f), DType::kBF16);
      const auto gain = rounded(random_vec(rng, lat, 0.5f, 1.5f), DType::kBF16);
      const auto init = rounded(random_vec(rng, capacity * width), DType::kBF16);
      auto run = [&](Backend& b) {
        const DType t = b.kind() == DeviceKind::kCuda ? DType::kBF16 : DType::kF32;
        Tensor cache = make(b, {pages, page_size, width}, t, init);
        Tensor r = make(b, {T, ld}, t, rows), w = make(b, {lat}, t, gain);
        Tensor sl = make_i32(b, slots), ps = make_i32(b, pos);
        const MatView row = as_mat(r, ld).cols_slice(0, cols);
        b.latent_cache_write(row, w, s.groups, 1e-5f, 0.75f, s.rot, ps.as<int32_t>(), 10000.0f,
                             sl.as<int32_t>(), {cache.data, t, pages, page_size, int32_t(width)});
        return std::make_pair(download(b, as_mat(r, ld)), download(b, as_mat(cache, width)));
      };
      const auto g = run(*gpu), c = run(*cpu);
      CHECK(all_finite(g.first));
      CHECK(all_finite(g.second));
      CHECK(rel_l2(g.first, c.first) < kBf16Tol);
      CHECK(rel_l2(g.second, c.second) < kBf16Tol);
    }
}

// The PDL chain (pdl_chain_check.h) at one row through the FMA GEMV (a 32 MB W).
TEST_CASE("PDL-launched op chains compute what synchronized ops compute, eager and in graphs",
          "[gpu][ops][pdl]") {
  const uint32_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937 rng(seed);
  check_pdl_chain(*backends().gpu, rng, 1, 4096, 2048);
}
