// The CPU backend's FP8 paged cache: the bytes a write leaves (codes, scales and bf16 tail in the
// page planes of kernels/fp8_e4m3.h, computed here from the layout rules directly), gathers that
// dequantize them, refused writes, and paged attention over an FP8 cache equal to the reference
// over a float32 cache holding the dequantized values (odd page sizes, several sequences, page
// boundaries inside the context), and close to the unquantized cache.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/backend.h"
#include "kernels/fp8_e4m3.h"
#include "kernels/paged_attention_cpu.h"

using namespace mlra;

namespace {

struct Fp8Cache {
  Fp8CacheLayout layout;
  int32_t page_size = 0;
  int64_t pages = 0;
  std::vector<uint8_t> bytes;

  Fp8Cache(Fp8CacheLayout l, int32_t ps, int64_t n)
      : layout(l), page_size(ps), pages(n), bytes(size_t(n * ps * l.row_bytes()), 0xAB) {}
  PagedCacheView view() {
    PagedCacheView v{bytes.data(), DType::kU8, pages, page_size, int32_t(layout.values())};
    v.encoding = CacheEncoding::kFp8E4M3;
    v.fp8 = layout;
    return v;
  }
};

std::vector<float> random_rows(int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(size_t(rows * cols));
  for (auto& x : v) x = normal(rng);
  return v;
}

float rel_l2(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += double(a[i] - b[i]) * (a[i] - b[i]);
    den += double(b[i]) * b[i];
  }
  return float(std::sqrt(num / std::max(den, 1e-30)));
}

}  // namespace

TEST_CASE("fp8 cache_write stores codes, scales and the bf16 tail in the page planes", "[fp8]") {
  auto b = make_cpu_backend();
  // 3 groups of 8 plus a 6-wide tail; page size 5 (rows straddle pages).
  const Fp8CacheLayout l{3, 8, 6};
  REQUIRE(l.row_bytes() == 24 + 12 + 12);
  Fp8Cache cache(l, 5, 4);
  const int64_t W = l.values(), T = 7;
  std::vector<float> src = random_rows(T, W, 1);
  src[0] = 0.0f;  // group 0 of row 0: all zeros
  for (int i = 1; i < 8; ++i) src[size_t(i)] = 0.0f;
  src[size_t(W + 9)] = 5e3f;  // an outlier in group 1 of row 1
  const std::vector<int32_t> slots = {0, 4, 5, 9, 11, 17, 19};
  b->cache_write({src.data(), DType::kF32, T, W, W}, slots.data(), cache.view(), 0);

  const int64_t page_bytes = 5 * 48;
  for (int64_t t = 0; t < T; ++t) {
    const int64_t page = slots[size_t(t)] / 5, slot = slots[size_t(t)] % 5;
    const uint8_t* base = cache.bytes.data() + page * page_bytes;
    const float* x = src.data() + t * W;
    for (int g = 0; g < 3; ++g) {
      float amax = 0.0f;
      for (int i = 0; i < 8; ++i) amax = std::max(amax, std::fabs(x[g * 8 + i]));
      float scale;
      std::memcpy(&scale, base + 5 * 24 + slot * 12 + g * 4, 4);
      INFO("token " << t << " group " << g);
      CHECK(scale == amax / 448.0f);
      for (int i = 0; i < 8; ++i)
        CHECK(base[slot * 24 + g * 8 + i] == fp8_quantize(x[g * 8 + i], scale));
    }
    for (int i = 0; i < 6; ++i) {
      uint16_t bits;
      std::memcpy(&bits, base + 5 * 36 + slot * 12 + i * 2, 2);
      CHECK(bits == bf16_encode(x[24 + i]));
    }
  }
  // The gather returns value * scale and the tail widened; a column window works too.
  std::vector<float> back(size_t(T * W)), window(size_t(T * 10));
  Tensor d_slots = b->alloc({T}, DType::kI32);
  b->upload(d_slots, slots.data(), slots.size() * 4);
  b->cache_gather(cache.view(), d_slots.as<int32_t>(), T, 0, {back.data(), DType::kF32, T, W, W});
  b->cache_gather(cache.view(), d_slots.as<int32_t>(), T, 20,
                  {window.data(), DType::kF32, T, 10, 10});
  for (int64_t t = 0; t < T; ++t)
    for (int64_t c = 0; c < W; ++c) {
      const float x = src[size_t(t * W + c)], y = back[size_t(t * W + c)];
      if (c >= 24)
        CHECK(y == bf16_decode(bf16_encode(x)));
      else
        CHECK(std::fabs(y - x) <= std::fabs(x) / 16 + 1e-3f * 5e3f);
      if (c >= 20) CHECK(window[size_t(t * 10 + c - 20)] == y);
    }
  CHECK(back[0] == 0.0f);
}

TEST_CASE("fp8 cache writes of K and V groups apart fill one row, partial groups are refused",
          "[fp8]") {
  auto b = make_cpu_backend();
  const Fp8CacheLayout l{4, 16, 0};  // two K heads, two V heads
  Fp8Cache split(l, 8, 2), whole(l, 8, 2);
  std::vector<float> rows = random_rows(3, 64, 2);
  const std::vector<int32_t> slots = {3, 8, 15};
  b->cache_write({rows.data(), DType::kF32, 3, 64, 64}, slots.data(), whole.view(), 0);
  b->cache_write({rows.data(), DType::kF32, 3, 32, 64}, slots.data(), split.view(), 0);
  b->cache_write({rows.data() + 32, DType::kF32, 3, 32, 64}, slots.data(), split.view(), 32);
  CHECK(split.bytes == whole.bytes);
  CHECK_THROWS_AS(
      b->cache_write({rows.data(), DType::kF32, 3, 24, 64}, slots.data(), whole.view(), 0),
      std::invalid_argument);
  CHECK_THROWS_AS(
      b->cache_write({rows.data(), DType::kF32, 3, 16, 64}, slots.data(), whole.view(), 8),
      std::invalid_argument);
  CHECK_THROWS_AS(
      b->cache_write({rows.data(), DType::kF32, 3, 32, 64}, slots.data(), whole.view(), 48),
      std::invalid_argument);
  const std::vector<int32_t> bad = {16};
  CHECK_THROWS_AS(
      b->cache_write({rows.data(), DType::kF32, 1, 64, 64}, bad.data(), whole.view(), 0),
      std::out_of_range);
}

TEST_CASE("paged attention over an fp8 cache equals attention over its dequantized values",
          "[fp8][attention]") {
  auto b = make_cpu_backend();
  struct Shape {
    Fp8CacheLayout layout;
    int32_t page_size, a_dim, r_dim, v_dim, heads;
  };
  // Latent (two latents of 24, k_pe 8), K/V (three K and three V heads of 16), GTA-like tail.
  const Shape shapes[] = {
      {{2, 24, 8}, 5, 24, 8, 24, 4}, {{6, 16, 0}, 7, 16, 0, 16, 3}, {{2, 16, 8}, 3, 8, 8, 16, 4}};
  for (const Shape& s : shapes) {
    const int32_t W = int32_t(s.layout.values());
    const int64_t pages = 24;
    Fp8Cache fp8(s.layout, s.page_size, pages);
    std::vector<float> plain(size_t(pages * s.page_size * W), 0.0f);
    std::vector<float> dequant(plain.size(), 0.0f);
    // Two sequences of 29 and 41 positions on interleaved pages.
    const std::vector<int32_t> lens = {29, 41};
    std::vector<int32_t> indptr{0}, indices;
    int32_t next = 0;
    for (int32_t n : lens) {
      for (int32_t p = 0; p < (n + s.page_size - 1) / s.page_size; ++p) indices.push_back(next++);
      indptr.push_back(int32_t(indices.size()));
    }
    std::vector<int32_t> slots;
    for (size_t q = 0; q < lens.size(); ++q)
      for (int32_t p = 0; p < lens[q]; ++p)
        slots.push_back(indices[size_t(indptr[q] + p / s.page_size)] * s.page_size +
                        p % s.page_size);
    const int64_t n = int64_t(slots.size());
    std::vector<float> rows = random_rows(n, W, 9);
    for (int64_t c = 0; c < W; ++c) rows[size_t(5 * W + c)] *= 40.0f;  // one loud token
    const PagedCacheView fv = fp8.view();
    const PagedCacheView pv{plain.data(), DType::kF32, pages, s.page_size, W};
    const PagedCacheView dv{dequant.data(), DType::kF32, pages, s.page_size, W};
    b->cache_write({rows.data(), DType::kF32, n, W, W}, slots.data(), fv, 0);
    b->cache_write({rows.data(), DType::kF32, n, W, W}, slots.data(), pv, 0);
    std::vector<float> deq(size_t(n * W));
    b->cache_gather(fv, slots.data(), n, 0, {deq.data(), DType::kF32, n, W, W});
    b->cache_write({deq.data(), DType::kF32, n, W, W}, slots.data(), dv, 0);

    // Queries: the last 6 positions of each sequence (a prefill chunk's tail) and a decode row.
    std::vector<int32_t> token_seq, token_pos;
    for (int32_t q = 0; q < 2; ++q)
      for (int32_t p = lens[size_t(q)] - 6; p < lens[size_t(q)]; ++p) {
        token_seq.push_back(q);
        token_pos.push_back(p);
      }
    token_seq.push_back(0);
    token_pos.push_back(3);
    const int32_t T = int32_t(token_seq.size()), qw = s.a_dim + s.r_dim;
    const std::vector<float> q = random_rows(T, s.heads * qw, 4);
    auto attend = [&](const PagedCacheView& cache) {
      std::vector<float> out(size_t(T * s.heads * s.v_dim));
      PagedAttentionArgs a;
      a.q = q.data();
      a.q_token_stride = s.heads * qw;
      a.q_head_stride = qw;
      a.num_tokens = T;
      a.num_heads = s.heads;
      a.a_dim = s.a_dim;
      a.r_dim = s.r_dim;
      a.v_dim = s.v_dim;
      for (int32_t h = 0; h < s.heads; ++h) {
        a.a_offset.push_back((h % 2) * s.a_dim);
        a.v_offset.push_back(s.v_dim == W ? 0 : (h % 2) * s.v_dim + (s.r_dim ? 0 : 3 * s.v_dim));
      }
      a.r_offset = int32_t(s.layout.quantized());
      a.cache = cache;
      a.token_seq = token_seq.data();
      a.token_pos = token_pos.data();
      a.page_indptr = indptr.data();
      a.page_indices = indices.data();
      a.num_seqs = 2;
      a.scale = 0.3f;
      a.out = out.data();
      a.out_token_stride = s.heads * s.v_dim;
      a.out_head_stride = s.v_dim;
      paged_attention_cpu(a);
      return out;
    };
    const auto o_fp8 = attend(fv), o_deq = attend(dv), o_plain = attend(pv);
    CHECK(o_fp8 == o_deq);  // the same float32 values through the same double math
    const float err = rel_l2(o_fp8, o_plain);
    INFO("relative L2 error against the unquantized cache " << err);
    CHECK(err > 0.0f);
    CHECK(err < 0.05f);
  }
}
