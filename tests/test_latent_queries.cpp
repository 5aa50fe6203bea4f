// The CPU backend's latent query composition: q_pe computed once per distinct head range and
// copied to the other units over it (Backend::copy_rows_batched), bit for bit against a q_pe
// product per unit on random inputs where units share and split heads; and copy_rows_batched
// itself over strided views, and the views it refuses.
#include <catch2/catch.hpp>

#include <cstring>
#include <random>
#include <vector>

#include "kernels/backend.h"

using namespace mlra;

namespace {

struct UnitShape {
  int64_t head0, n_heads;
};

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.bytes() == b.bytes() && std::memcmp(a.data, b.data, a.bytes()) == 0;
}

}  // namespace

TEST_CASE("latent_queries computes q_pe once per head range and copies it, bit for bit",
          "[latent_queries]") {
  auto b = make_cpu_backend();
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 0.5f);
  const auto random = [&](const std::vector<int64_t>& shape) {
    Tensor t = b->alloc(shape, DType::kF32);
    std::vector<float> v(size_t(t.numel()));
    for (auto& e : v) e = normal(rng);
    b->upload_f32(t, v.data());
    return t;
  };
  // Units 0, 1 and 3 share heads [0, 4); unit 2 covers [1, 3) alone (GLA-like).
  const int64_t T = 3, heads = 4, dn = 8, dr = 6, width = 16, r_q = 24, vw = width + dr;
  const std::vector<UnitShape> shapes = {{0, 4}, {0, 4}, {1, 2}, {0, 4}};
  std::vector<Backend::LatentUnitView> units;
  int64_t n_virt = 0;
  for (const UnitShape& u : shapes) {
    Backend::LatentUnitView view;
    view.w_uk = random({u.n_heads, dn, width});
    view.head0 = u.head0;
    view.n_heads = u.n_heads;
    view.v0 = n_virt;
    n_virt += u.n_heads;
    units.push_back(view);
  }
  const Tensor q_nope = random({T, heads * dn}), cq = random({T, r_q}),
               rope_w = random({heads * dr, r_q});
  const int32_t positions[T] = {4, 17, 1};
  Tensor got = b->alloc({T, n_virt * vw}, DType::kF32),
         want = b->alloc({T, n_virt * vw}, DType::kF32);
  const MatView qn = as_mat(q_nope, heads * dn), c = as_mat(cq, r_q), rw = as_mat(rope_w, r_q);
  b->latent_queries(qn, c, rw, units, dn, dr, width, positions, 10000.0f, as_mat(got, n_virt * vw));
  // The composition with a q_pe product per unit.
  const MatView w = as_mat(want, n_virt * vw);
  for (const auto& u : units) {
    b->linear_batched(qn.cols_slice(u.head0 * dn, dn), dn,
                      {u.w_uk.data, u.w_uk.dtype, dn, width, width}, dn * width, false,
                      w.cols_slice(u.v0 * vw, width), vw, u.n_heads, 1.0f, 0.0f);
    b->linear_batched(c, 0, rw.rows_slice(u.head0 * dr, dr), dr * rw.ld, true,
                      w.cols_slice(u.v0 * vw + width, dr), vw, u.n_heads, 1.0f, 0.0f);
  }
  b->rope(w, n_virt, vw, width, dr, positions, 10000.0f);
  CHECK(same_bits(got, want));
}

TEST_CASE("copy_rows_batched copies strided views and refuses mismatched ones",
          "[latent_queries]") {
  auto b = make_cpu_backend();
  Tensor src = b->alloc({2, 30}, DType::kF32), dst = b->alloc({2, 30}, DType::kF32);
  std::vector<float> v(60), zero(60, 0.0f);
  for (size_t i = 0; i < v.size(); ++i) v[i] = float(i) + 0.5f;
  b->upload_f32(src, v.data());
  b->upload_f32(dst, zero.data());
  // Three items of [2 rows, 4 cols] at stride 10, from column 1 to column 5.
  const MatView s = as_mat(src, 30).cols_slice(1, 4), d = as_mat(dst, 30).cols_slice(5, 4);
  REQUIRE(b->copy_rows_batched(s, 10, d, 10, 3));
  std::vector<float> out(60);
  b->download_f32(as_mat(dst, 30), out.data());
  for (int64_t r = 0; r < 2; ++r)
    for (int64_t c = 0; c < 30; ++c) {
      const int64_t item = c / 10, k = c % 10 - 5;
      const float expect = k >= 0 && k < 4 ? v[size_t(r * 30 + item * 10 + 1 + k)] : 0.0f;
      CHECK(out[size_t(r * 30 + c)] == expect);
    }
  CHECK_THROWS_WITH(b->copy_rows_batched(s, 10, as_mat(dst, 30).cols_slice(0, 3), 10, 1),
                    "copy_rows_batched: src and dst must have one dtype and shape");
}
