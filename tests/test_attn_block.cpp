// Backend::attn_block's CPU composition against the call sequence the model issued before the op
// existed (linear, rms_norm, linear, latent_queries, latent_cache_write), bit for bit on random
// inputs at tiny MLRA-4 (four latents, each over every head), MLA (one wide latent) and GLA-2 (two
// latents, each over half the heads) shapes, three tokens at scattered positions and slots; and
// the shapes it refuses.
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

struct FrontShape {
  const char* name;
  int64_t d, r_q, heads, dn, dr, width, groups;
  std::vector<UnitShape> units;
};

constexpr int64_t kTokens = 3, kPages = 4;
constexpr int32_t kPageSize = 4;

class Front {
 public:
  Front(Backend& b, const FrontShape& s, uint32_t seed) : b_(b), s_(s), rng_(seed) {
    const int64_t na = s.r_q + s.groups * s.width + s.dr;
    x_ = random({kTokens, s.d});
    x_proj_ = random({na, s.d});
    q_norm_ = random({s.r_q});
    q_b_nope_ = random({s.heads * s.dn, s.r_q});
    rope_w_ = random({s.heads * s.dr, s.r_q});
    latent_norms_ = random({s.groups * s.width});
    int64_t v0 = 0;
    for (const UnitShape& u : s.units) {
      Backend::LatentUnitView view;
      view.w_uk = random({u.n_heads, s.dn, s.width});
      view.head0 = u.head0;
      view.n_heads = u.n_heads;
      view.v0 = v0;
      v0 += u.n_heads;
      units_.push_back(view);
    }
    n_virt_ = v0;
  }

  // Fresh outputs and cache; the composed path runs the sequence, the other attn_block.
  struct Out {
    Tensor xp, cq, q_nope, qv;
    std::vector<float> cache;
  };
  Out run(bool composed) {
    const FrontShape& s = s_;
    const int64_t na = s.r_q + s.groups * s.width + s.dr, vw = s.width + s.dr;
    const int64_t row = s.groups * s.width + s.dr;
    Out o{b_.alloc({kTokens, na}, b_.act_dtype()), b_.alloc({kTokens, s.r_q}, b_.act_dtype()),
          b_.alloc({kTokens, s.heads * s.dn}, b_.act_dtype()),
          b_.alloc({kTokens, n_virt_ * vw}, b_.act_dtype()),
          std::vector<float>(size_t(kPages * kPageSize * (row + 3)), -7.0f)};
    const PagedCacheView cache{o.cache.data(), DType::kF32, kPages, kPageSize, int32_t(row + 3)};
    Backend::AttnBlockArgs a = args_with(o, cache);
    a.q_scale = 0.75f;
    a.kv_scale = 1.25f;
    a.eps = 1e-5f;
    a.rope_base = 10000.0f;
    if (!composed) {
      b_.attn_block(a);
      return o;
    }
    b_.linear(a.x, a.x_proj, a.xp, 1.0f, 0.0f);
    b_.rms_norm(a.xp.cols_slice(0, s.r_q), a.q_norm, a.eps, a.q_scale, a.cq);
    b_.linear(a.cq, a.q_b_nope, a.q_nope, 1.0f, 0.0f);
    b_.latent_queries(a.q_nope, a.cq, a.rope_w, a.units, s.dn, s.dr, s.width, a.positions,
                      a.rope_base, a.qv);
    b_.latent_cache_write(a.xp.cols_slice(s.r_q, row), a.latent_norms, s.groups, a.eps, a.kv_scale,
                          s.dr, a.positions, a.rope_base, a.slots, a.cache);
    return o;
  }

  Backend::AttnBlockArgs args_with(Out& o, PagedCacheView cache) {
    const FrontShape& s = s_;
    Backend::AttnBlockArgs a;
    a.x = as_mat(x_, s.d);
    a.x_proj = as_mat(x_proj_, s.d);
    a.xp = as_mat(o.xp, o.xp.shape[1]);
    a.q_norm = q_norm_;
    a.cq = as_mat(o.cq, s.r_q);
    a.q_b_nope = as_mat(q_b_nope_, s.r_q);
    a.q_nope = as_mat(o.q_nope, s.heads * s.dn);
    a.rope_w = as_mat(rope_w_, s.r_q);
    a.units = units_;
    a.dn = s.dn;
    a.dr = s.dr;
    a.width = s.width;
    a.latent_norms = latent_norms_;
    a.groups = s.groups;
    a.positions = positions_;
    a.slots = slots_;
    a.cache = cache;
    a.qv = as_mat(o.qv, o.qv.shape[1]);
    return a;
  }

 private:
  Tensor random(const std::vector<int64_t>& shape) {
    Tensor t = b_.alloc(shape, b_.weight_dtype());
    std::normal_distribution<float> normal(0.0f, 0.5f);
    std::vector<float> v(size_t(t.numel()));
    for (auto& e : v) e = normal(rng_);
    b_.upload_f32(t, v.data());
    return t;
  }

  Backend& b_;
  FrontShape s_;
  std::mt19937 rng_;
  Tensor x_, x_proj_, q_norm_, q_b_nope_, rope_w_, latent_norms_;
  std::vector<Backend::LatentUnitView> units_;
  int64_t n_virt_ = 0;
  const int32_t positions_[kTokens] = {5, 0, 13};
  const int32_t slots_[kTokens] = {9, 2, 14};
};

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.bytes() == b.bytes() && std::memcmp(a.data, b.data, a.bytes()) == 0;
}

const FrontShape kShapes[] = {
    {"MLRA-4", 32, 16, 4, 8, 4, 8, 4, {{0, 4}, {0, 4}, {0, 4}, {0, 4}}},
    {"MLA", 32, 16, 4, 8, 4, 24, 1, {{0, 4}}},
    {"GLA-2", 40, 24, 4, 8, 6, 16, 2, {{0, 2}, {2, 2}}},
};

}  // namespace

TEST_CASE("attn_block's CPU composition equals the model's call sequence bit for bit",
          "[attn_block]") {
  auto b = make_cpu_backend();
  uint32_t seed = 1;
  for (const FrontShape& s : kShapes) {
    CAPTURE(s.name);
    Front f(*b, s, seed++);
    const Front::Out op = f.run(false), seq = f.run(true);
    CHECK(same_bits(op.xp, seq.xp));
    CHECK(same_bits(op.cq, seq.cq));
    CHECK(same_bits(op.q_nope, seq.q_nope));
    CHECK(same_bits(op.qv, seq.qv));
    CHECK(op.cache == seq.cache);
    // The op wrote something: every token's slot holds its entry, others keep the fill.
    const int64_t width = s.groups * s.width + s.dr + 3;
    CHECK(op.cache[size_t(2 * width)] != -7.0f);
    CHECK(op.cache[size_t(3 * width)] == -7.0f);
  }
}

TEST_CASE("attn_block refuses an xp too narrow for [q | rope] or rows that do not match",
          "[attn_block]") {
  auto b = make_cpu_backend();
  const FrontShape& s = kShapes[0];
  Front f(*b, s, 7);
  Front::Out o = f.run(false);
  std::vector<float> cache(size_t(kPages * kPageSize * 64));
  const PagedCacheView view{cache.data(), DType::kF32, kPages, kPageSize, 64};
  Backend::AttnBlockArgs a = f.args_with(o, view);
  a.xp = a.xp.cols_slice(0, s.r_q + s.dr - 1);
  CHECK_THROWS_WITH(b->attn_block(a),
                    "attn_block: xp must be [T, r_q + latents + dr], cq [T, r_q]");
  a = f.args_with(o, view);
  a.cq = a.cq.rows_slice(0, 2);
  CHECK_THROWS_WITH(b->attn_block(a),
                    "attn_block: xp must be [T, r_q + latents + dr], cq [T, r_q]");
}

TEST_CASE("latent_queries computes q_pe once per head range and copies it, bit for bit",
          "[attn_block][latent_queries]") {
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

TEST_CASE("copy_rows_batched copies strided views and refuses mismatched ones", "[attn_block]") {
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
