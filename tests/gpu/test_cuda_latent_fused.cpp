// The fused latent projections (kernels/latent_projections.cu) against the CPU composition
// (Backend::latent_queries / latent_up_project): the kernels themselves on one-token steps over
// 1..8 units, units over part of the heads, the release's head shapes (d_n 128, width 128, d_r
// 64, r_q 1024 and 1536) and small odd ones; and the CUDA backend's choice at 1..8 tokens, which
// fuses exactly the one-token steps over kMinFusedLatentUnits+ units (bitwise equal to the
// kernels then) and composes the rest on the device. Random inputs, poisoned outputs, the seed
// reported on failure.
#include <catch2/catch.hpp>

#include <utility>

#include "gpu_test_util.h"
#include "kernels/latent_projections.h"

using namespace mlra;
using namespace mlra::gputest;

namespace {

struct Dims {
  int64_t dn, dr, width, r_q, heads;
};
using Layout = std::vector<std::pair<int64_t, int64_t>>;  // (first head, heads) per unit

const __nv_bfloat16* bf16_of(const Tensor& t) {
  return static_cast<const __nv_bfloat16*>(t.data);
}

void check_fused(Backend& gpu, const Dims& d, const Layout& layout, int64_t T, std::mt19937& rng) {
  Backend& cpu = *backends().cpu;
  int64_t n_virt = 0;
  for (const auto& [h0, n] : layout) n_virt += n;
  const auto q_nope = rounded(random_vec(rng, size_t(T * d.heads * d.dn)), DType::kBF16);
  const auto cq = rounded(random_vec(rng, size_t(T * d.r_q)), DType::kBF16);
  const auto rope_w =
      rounded(random_vec(rng, size_t(d.heads * d.dr * d.r_q), -0.2f, 0.2f), DType::kBF16);
  const auto z = rounded(random_vec(rng, size_t(T * n_virt * d.width)), DType::kBF16);
  std::vector<int32_t> pos(static_cast<size_t>(T));
  for (auto& p : pos) p = int32_t(rng() % 50000);
  std::vector<std::vector<float>> uk, uv;
  for (const auto& [h0, n] : layout) {
    uk.push_back(rounded(random_vec(rng, size_t(n * d.dn * d.width), -0.2f, 0.2f), DType::kBF16));
    uv.push_back(rounded(random_vec(rng, size_t(n * d.dn * d.width), -0.2f, 0.2f), DType::kBF16));
  }
  const int64_t vw = d.width + d.dr;
  // o starts as a known pattern: heads no unit covers must keep it.
  const auto o0 = rounded(random_vec(rng, size_t(T * d.heads * d.dn)), DType::kBF16);
  // direct: the fused kernels themselves (one token), bypassing the backend's choice.
  auto run = [&](Backend& be, bool direct) {
    const DType t = be.kind() == DeviceKind::kCuda ? DType::kBF16 : DType::kF32;
    std::vector<Backend::LatentUnitView> units;
    int64_t v0 = 0;
    for (size_t u = 0; u < layout.size(); ++u) {
      const auto [h0, n] = layout[u];
      units.push_back({make(be, {n, d.dn, d.width}, t, uk[u]),
                       make(be, {n, d.dn, d.width}, t, uv[u]),
                       h0,
                       n,
                       v0,
                       {}});
      v0 += n;
    }
    Tensor tq = make(be, {T, d.heads * d.dn}, t, q_nope), tc = make(be, {T, d.r_q}, t, cq);
    Tensor tr = make(be, {d.heads * d.dr, d.r_q}, t, rope_w);
    Tensor tz = make(be, {T, n_virt * d.width}, t, z), tp = make_i32(be, pos);
    Tensor qv = be.alloc({T, n_virt * vw}, t), o = make(be, {T, d.heads * d.dn}, t, o0);
    if (be.kind() == DeviceKind::kCuda) poison(be, qv);
    if (direct) {
      cuda::LatentProjParams p;
      for (size_t u = 0; u < units.size(); ++u)
        p.unit[u] = {bf16_of(units[u].w_uk), bf16_of(units[u].w_uv), int32_t(units[u].head0),
                     int32_t(units[u].n_heads), int32_t(units[u].v0)};
      p.n_units = int32_t(units.size()), p.n_virt = int32_t(n_virt), p.heads = int32_t(d.heads);
      p.dn = int32_t(d.dn), p.dr = int32_t(d.dr), p.width = int32_t(d.width);
      p.r_q = int32_t(d.r_q);
      p.q_nope = bf16_of(tq), p.cq = bf16_of(tc), p.rope_w = bf16_of(tr), p.rope_ld = d.r_q;
      p.positions = tp.as<int32_t>(), p.rope_base = 10000.0;
      p.qv = static_cast<__nv_bfloat16*>(qv.data), p.z = bf16_of(tz);
      p.o = static_cast<__nv_bfloat16*>(o.data), p.alpha = 0.7f;
      REQUIRE(cuda::latent_projections_support(p));
      cuda::launch_latent_queries(p, cuda_stream_of(be));
      cuda::launch_latent_up(p, cuda_stream_of(be));
    } else {
      be.latent_queries(as_mat(tq, d.heads * d.dn), as_mat(tc, d.r_q), as_mat(tr, d.r_q), units,
                        d.dn, d.dr, d.width, tp.as<int32_t>(), 10000.0f, as_mat(qv, n_virt * vw));
      be.latent_up_project(as_mat(tz, n_virt * d.width), units, d.dn, d.width, 0.7f,
                           as_mat(o, d.heads * d.dn));
    }
    return std::make_pair(download(be, as_mat(qv, n_virt * vw)),
                          download(be, as_mat(o, d.heads * d.dn)));
  };
  const auto g = run(gpu, false), c = run(cpu, false);
  CHECK(all_finite(g.first));
  CHECK(all_finite(g.second));
  CHECK(rel_l2(g.first, c.first) < kBf16Tol);
  CHECK(rel_l2(g.second, c.second) < kBf16Tol);
  if (T != 1) return;
  const auto k = run(gpu, true);
  CHECK(all_finite(k.first));
  CHECK(all_finite(k.second));
  CHECK(rel_l2(k.first, c.first) < kBf16Tol);
  CHECK(rel_l2(k.second, c.second) < kBf16Tol);
  // The kernels are deterministic, so the backend's fusing shows as bitwise equality.
  if (layout.size() >= size_t(cuda::kMinFusedLatentUnits)) {
    CHECK(g.first == k.first);
    CHECK(g.second == k.second);
  }
}

}  // namespace

TEST_CASE("fused latent projections match the cpu composition; one-token steps over 4+ units fuse",
          "[gpu][ops][latent][fused]") {
  const uint32_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937 rng(seed);
  Backend& gpu = *backends().gpu;
  // MLRA-4 at TP1 (four units over all heads), at TP4 (one unit), MLRA-2 / GLA-like halves, MLA
  // TPLA-like slices (r_q 1536), eight units, unit sets leaving heads 5..7 uncovered, and the
  // tiny MLRA-4 checkpoint.
  struct Case {
    Dims d;
    Layout layout;
  };
  const Case cases[] = {
      {{128, 64, 128, 1024, 24}, {{0, 24}, {0, 24}, {0, 24}, {0, 24}}},
      {{128, 64, 128, 1024, 24}, {{0, 24}}},
      {{128, 64, 128, 1024, 24}, {{0, 12}, {12, 12}}},
      {{128, 64, 128, 1536, 24}, {{0, 24}, {0, 24}}},
      {{128, 64, 128, 1536, 24}, {{0, 12}, {12, 12}, {0, 12}, {12, 12}}},
      {{32, 16, 64, 96, 8}, {{0, 3}, {3, 2}, {0, 5}}},
      {{32, 16, 64, 96, 8}, {{0, 3}, {3, 2}, {0, 5}, {1, 3}}},
      {{16, 8, 32, 64, 8}, {{0, 8}, {0, 8}, {0, 8}, {0, 8}, {0, 4}, {4, 4}, {0, 8}, {2, 5}}},
      {{8, 4, 8, 48, 24}, {{0, 24}, {0, 24}, {0, 24}, {0, 24}}},
  };
  for (const Case& c : cases)
    for (int64_t T = 1; T <= 8; ++T) {
      INFO("dn " << c.d.dn << " dr " << c.d.dr << " width " << c.d.width << " r_q " << c.d.r_q
                 << " units " << c.layout.size() << " tokens " << T);
      check_fused(gpu, c.d, c.layout, T, rng);
    }
}
