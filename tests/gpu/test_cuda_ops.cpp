// Every non-attention op of the CUDA backend against the CPU reference on fresh random inputs:
// bf16-rounded inputs on both sides, GPU outputs poisoned with NaN first, rel-L2 < 1e-2.
#include <catch2/catch.hpp>

#include <algorithm>

#include "gpu_test_util.h"

using namespace mlra;
using namespace mlra::gputest;

TEST_CASE("cuda linear matches cpu (bf16 and f32 outputs, beta, strided views)", "[gpu][ops]") {
  auto& [cpu, gpu] = backends();
  const uint32_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937 rng(seed);
  for (int64_t m : {1, 7, 33})
    for (int64_t k : {64, 200})
      for (int64_t n : {24, 131})
        for (DType yt : {DType::kBF16, DType::kF32}) {
          // x is a column slice of a wider matrix (ld > cols) to cover strided views.
          const int64_t ld = k + 16;
          const auto x = rounded(random_vec(rng, m * ld), DType::kBF16);
          const auto w = rounded(random_vec(rng, n * k), DType::kBF16);
          const auto y0 = rounded(random_vec(rng, m * n), yt);
          Tensor xc = make(*cpu, {m, ld}, DType::kF32, x), wc = make(*cpu, {n, k}, DType::kF32, w);
          Tensor yc = make(*cpu, {m, n}, DType::kF32, y0);
          Tensor xg = make(*gpu, {m, ld}, DType::kBF16, x),
                 wg = make(*gpu, {n, k}, DType::kBF16, w);
          Tensor yg = make(*gpu, {m, n}, yt, y0);
          cpu->linear(as_mat(xc, ld).cols_slice(8, k), as_mat(wc, k), as_mat(yc, n), 0.5f, 0.25f);
          gpu->linear(as_mat(xg, ld).cols_slice(8, k), as_mat(wg, k), as_mat(yg, n), 0.5f, 0.25f);
          INFO("m " << m << " k " << k << " n " << n << " y " << dtype_name(yt));
          CHECK(rel_l2(download(*gpu, as_mat(yg, n)), download(*cpu, as_mat(yc, n))) < kBf16Tol);
        }
}

TEST_CASE("cuda linear_batched matches cpu (both weight layouts, broadcast x)", "[gpu][ops]") {
  auto& [cpu, gpu] = backends();
  const uint32_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937 rng(seed);
  const int64_t batch = 5, m = 3, k = 48, n = 40;
  for (bool out_by_in : {true, false})
    for (int64_t x_stride : {int64_t(0), k}) {
      // x: batch blocks of k columns side by side in one row ([m, batch*k]); y likewise.
      const int64_t xw = batch * k, yw = batch * n;
      const auto x = rounded(random_vec(rng, m * xw), DType::kBF16);
      const auto w = rounded(random_vec(rng, batch * n * k), DType::kBF16);
      const auto y0 = rounded(random_vec(rng, m * yw), DType::kBF16);
      const int64_t wr = out_by_in ? n : k, wc_ = out_by_in ? k : n;
      auto run = [&](Backend& b, DType t) {
        Tensor xt = make(b, {m, xw}, t, x), wt = make(b, {batch * wr, wc_}, t, w);
        Tensor yt = make(b, {m, yw}, t, y0);
        b.linear_batched(as_mat(xt, xw).cols_slice(0, k), x_stride, {wt.data, t, wr, wc_, wc_},
                         wr * wc_, out_by_in, as_mat(yt, yw).cols_slice(0, n), n, batch, 1.5f,
                         -0.5f);
        return download(b, as_mat(yt, yw));
      };
      INFO("out_by_in " << out_by_in << " x_stride " << x_stride);
      CHECK(rel_l2(run(*gpu, DType::kBF16), run(*cpu, DType::kF32)) < kBf16Tol);
    }
}

TEST_CASE("cuda embed, rms_norm, rope, silu/sigmoid, add, scale match cpu", "[gpu][ops]") {
  auto& [cpu, gpu] = backends();
  const uint32_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937 rng(seed);
  const int64_t rows = 9, cols = 96, vocab = 37;

  SECTION("embed into f32 and bf16") {
    std::vector<int32_t> ids(rows);
    for (auto& i : ids) i = int32_t(rng() % vocab);
    const auto table = rounded(random_vec(rng, vocab * cols), DType::kBF16);
    for (DType ot : {DType::kF32, DType::kBF16}) {
      Tensor tc = make(*cpu, {vocab, cols}, DType::kF32, table),
             oc = cpu->alloc({rows, cols}, DType::kF32);
      Tensor tg = make(*gpu, {vocab, cols}, DType::kBF16, table), og = gpu->alloc({rows, cols}, ot);
      poison(*gpu, og);
      Tensor ic = make_i32(*cpu, ids), ig = make_i32(*gpu, ids);
      cpu->embed(ic.as<int32_t>(), rows, as_mat(tc, cols), as_mat(oc, cols));
      gpu->embed(ig.as<int32_t>(), rows, as_mat(tg, cols), as_mat(og, cols));
      CHECK(rel_l2(download(*gpu, as_mat(og, cols)), download(*cpu, as_mat(oc, cols))) < 1e-6);
    }
  }
  SECTION("rms_norm f32 residual in, bf16 and f32 out, with scale") {
    const auto x = random_vec(rng, rows * cols, -3.0f, 3.0f);
    const auto w = rounded(random_vec(rng, cols, 0.5f, 1.5f), DType::kBF16);
    for (DType ot : {DType::kBF16, DType::kF32}) {
      Tensor xc = make(*cpu, {rows, cols}, DType::kF32, x), wc = make(*cpu, {cols}, DType::kF32, w);
      Tensor xg = make(*gpu, {rows, cols}, DType::kF32, x),
             wg = make(*gpu, {cols}, DType::kBF16, w);
      Tensor oc = cpu->alloc({rows, cols}, DType::kF32), og = gpu->alloc({rows, cols}, ot);
      poison(*gpu, og);
      cpu->rms_norm(as_mat(xc, cols), wc, 1e-6f, 1.7f, as_mat(oc, cols));
      gpu->rms_norm(as_mat(xg, cols), wg, 1e-6f, 1.7f, as_mat(og, cols));
      CHECK(rel_l2(download(*gpu, as_mat(og, cols)), download(*cpu, as_mat(oc, cols))) < kBf16Tol);
    }
  }
  SECTION(
      "rms_norm_groups (latents of a row, strided output) and add_rms_norm, registers and "
      "two-pass") {
    // cols 96 (in registers) and 5000 per group (over the 4096 register limit: two passes).
    for (const int64_t g : {int64_t(96), int64_t(5000)}) {
      const int64_t groups = 3, width = groups * g, out_ld = width + 40;
      const auto x = rounded(random_vec(rng, rows * width, -3.0f, 3.0f), DType::kBF16);
      const auto w = rounded(random_vec(rng, width, 0.5f, 1.5f), DType::kBF16);
      Tensor xc = make(*cpu, {rows, width}, DType::kF32, x),
             wc = make(*cpu, {width}, DType::kF32, w);
      Tensor xg = make(*gpu, {rows, width}, DType::kBF16, x),
             wg = make(*gpu, {width}, DType::kBF16, w);
      Tensor oc = cpu->alloc({rows, out_ld}, DType::kF32),
             og = gpu->alloc({rows, out_ld}, DType::kBF16);
      poison(*gpu, og);
      const MatView ocv = as_mat(oc, out_ld).cols_slice(0, width),
                    ogv = as_mat(og, out_ld).cols_slice(0, width);
      cpu->rms_norm_groups(as_mat(xc, width), wc, groups, 1e-6f, 0.8f, ocv);
      gpu->rms_norm_groups(as_mat(xg, width), wg, groups, 1e-6f, 0.8f, ogv);
      CHECK(rel_l2(download(*gpu, ogv), download(*cpu, ocv)) < kBf16Tol);
      // Each group really is normed alone: group 1 equals a plain rms_norm of its columns.
      Tensor w1 =
          make(*cpu, {g}, DType::kF32, std::vector<float>(w.begin() + g, w.begin() + 2 * g));
      Tensor one = cpu->alloc({rows, g}, DType::kF32);
      cpu->rms_norm(as_mat(xc, width).cols_slice(g, g), w1, 1e-6f, 0.8f, as_mat(one, g));
      CHECK(rel_l2(download(*gpu, ogv.cols_slice(g, g)), download(*cpu, as_mat(one, g))) <
            kBf16Tol);

      const auto delta = rounded(random_vec(rng, rows * g), DType::kBF16);
      const auto acc = random_vec(rng, rows * g, -2.0f, 2.0f);
      auto fused = [&](Backend& be, DType t) {
        Tensor td = make(be, {rows, g}, t, delta), ta = make(be, {rows, g}, DType::kF32, acc);
        Tensor tw = make(be, {g}, t, std::vector<float>(w.begin(), w.begin() + g)),
               out = be.alloc({rows, g}, t);
        if (be.kind() == DeviceKind::kCuda) poison(be, out);
        be.add_rms_norm(as_mat(td, g), as_mat(ta, g), tw, 1e-6f, as_mat(out, g));
        return std::make_pair(download(be, as_mat(out, g)), download(be, as_mat(ta, g)));
      };
      const auto fg = fused(*gpu, DType::kBF16), fc = fused(*cpu, DType::kF32);
      CHECK(rel_l2(fg.first, fc.first) < kBf16Tol);
      CHECK(rel_l2(fg.second, fc.second) < 1e-6);  // the f32 residual sum is exact on both
    }
  }
  SECTION("rope on strided heads, positions up to 100K") {
    const int64_t n_heads = 3, head_stride = 32, rot_offset = 8, rot_dim = 16;
    std::vector<int32_t> pos(rows);
    for (auto& p : pos) p = int32_t(rng() % 100000);
    pos[0] = 0;
    pos[1] = 99999;
    const auto x = rounded(random_vec(rng, rows * cols), DType::kBF16);
    Tensor xc = make(*cpu, {rows, cols}, DType::kF32, x),
           xg = make(*gpu, {rows, cols}, DType::kBF16, x);
    Tensor pc = make_i32(*cpu, pos), pg = make_i32(*gpu, pos);
    cpu->rope(as_mat(xc, cols), n_heads, head_stride, rot_offset, rot_dim, pc.as<int32_t>(),
              10000.0f);
    gpu->rope(as_mat(xg, cols), n_heads, head_stride, rot_offset, rot_dim, pg.as<int32_t>(),
              10000.0f);
    CHECK(rel_l2(download(*gpu, as_mat(xg, cols)), download(*cpu, as_mat(xc, cols))) < kBf16Tol);
  }
  SECTION("silu_mul, sigmoid_mul, add into f32, scale") {
    const auto a = rounded(random_vec(rng, rows * cols, -4.0f, 4.0f), DType::kBF16);
    const auto b = rounded(random_vec(rng, rows * cols), DType::kBF16);
    const auto acc = random_vec(rng, rows * cols);
    auto run = [&](Backend& be, DType t) {
      Tensor ta = make(be, {rows, cols}, t, a), tb = make(be, {rows, cols}, t, b);
      Tensor out = be.alloc({rows, cols}, t), tacc = make(be, {rows, cols}, DType::kF32, acc);
      if (be.kind() == DeviceKind::kCuda) poison(be, out);
      be.silu_mul(as_mat(ta, cols), as_mat(tb, cols), as_mat(out, cols));
      be.sigmoid_mul(as_mat(tb, cols), as_mat(out, cols));
      be.add(as_mat(out, cols), as_mat(tacc, cols));
      be.scale(as_mat(tacc, cols), -0.75f);
      return std::make_pair(download(be, as_mat(out, cols)), download(be, as_mat(tacc, cols)));
    };
    const auto g = run(*gpu, DType::kBF16), c = run(*cpu, DType::kF32);
    CHECK(rel_l2(g.first, c.first) < kBf16Tol);
    CHECK(rel_l2(g.second, c.second) < kBf16Tol);
  }
}

TEST_CASE("cuda cache_write scatters rows to page slots", "[gpu][ops]") {
  auto& [cpu, gpu] = backends();
  const uint32_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937 rng(seed);
  const int32_t pages = 6, page_size = 16, width = 40, col_offset = 8, n = 11, cols = 24;
  std::vector<int32_t> slots(n);
  std::vector<int32_t> all(pages * page_size);
  for (int i = 0; i < int(all.size()); ++i) all[i] = i;
  std::shuffle(all.begin(), all.end(), rng);
  std::copy_n(all.begin(), n, slots.begin());
  const auto src = rounded(random_vec(rng, n * cols), DType::kBF16);
  const auto init = rounded(random_vec(rng, pages * page_size * width), DType::kBF16);
  auto run = [&](Backend& b, DType t) {
    Tensor cache = make(b, {pages, page_size, width}, t, init);
    Tensor s = make(b, {n, cols}, t, src), sl = make_i32(b, slots);
    PagedCacheView view{cache.data, t, pages, page_size, width};
    b.cache_write(as_mat(s, cols), sl.as<int32_t>(), view, col_offset);
    return download(b, as_mat(cache, width));
  };
  CHECK(rel_l2(run(*gpu, DType::kBF16), run(*cpu, DType::kF32)) == 0.0);
}

TEST_CASE("cuda latent_queries and latent_up_project (fused at one token, else composed) match cpu",
          "[gpu][ops][latent]") {
  auto& [cpu, gpu] = backends();
  const uint32_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937 rng(seed);
  const int64_t dn = 32, dr = 16, width = 64, r_q = 96, heads = 6;
  // MLRA-like: 4 units over all heads; TPLA/GLA-like: two halves, then two units over all (the
  // backend fuses one-token steps over 4+ units, composes the rest).
  const std::vector<std::vector<std::pair<int64_t, int64_t>>> layouts = {
      {{0, 6}, {0, 6}, {0, 6}, {0, 6}}, {{0, 3}, {3, 3}, {0, 6}, {0, 6}}};
  for (const auto& layout : layouts)
    for (const int64_t T : {int64_t(1), int64_t(3), int64_t(8), int64_t(9)}) {
      INFO("units " << layout.size() << " tokens " << T);
      int64_t n_virt = 0;
      for (const auto& [h0, n] : layout) n_virt += n;
      const auto q_nope = rounded(random_vec(rng, T * heads * dn), DType::kBF16);
      const auto cq = rounded(random_vec(rng, T * r_q), DType::kBF16);
      const auto rope_w = rounded(random_vec(rng, heads * dr * r_q, -0.2f, 0.2f), DType::kBF16);
      const auto z = rounded(random_vec(rng, T * n_virt * width), DType::kBF16);
      std::vector<int32_t> pos(static_cast<size_t>(T));
      for (auto& p : pos) p = int32_t(rng() % 50000);
      std::vector<std::vector<float>> uk, uv;
      for (const auto& [h0, n] : layout) {
        uk.push_back(rounded(random_vec(rng, n * dn * width, -0.2f, 0.2f), DType::kBF16));
        uv.push_back(rounded(random_vec(rng, n * dn * width, -0.2f, 0.2f), DType::kBF16));
      }
      auto run = [&](Backend& be) {
        const DType t = be.kind() == DeviceKind::kCuda ? DType::kBF16 : DType::kF32;
        std::vector<Backend::LatentUnitView> units;
        int64_t v0 = 0;
        for (size_t u = 0; u < layout.size(); ++u) {
          const auto [h0, n] = layout[u];
          units.push_back({make(be, {n, dn, width}, t, uk[u]),
                           make(be, {n, dn, width}, t, uv[u]),
                           h0,
                           n,
                           v0,
                           {}});
          v0 += n;
        }
        Tensor tq = make(be, {T, heads * dn}, t, q_nope), tc = make(be, {T, r_q}, t, cq);
        Tensor tr = make(be, {heads * dr, r_q}, t, rope_w),
               tz = make(be, {T, n_virt * width}, t, z);
        Tensor tp = make_i32(be, pos);
        Tensor qv = be.alloc({T, n_virt * (width + dr)}, t), o = be.alloc({T, heads * dn}, t);
        if (be.kind() == DeviceKind::kCuda) {
          poison(be, qv);
          poison(be, o);
        }
        be.latent_queries(as_mat(tq, heads * dn), as_mat(tc, r_q), as_mat(tr, r_q), units, dn, dr,
                          width, tp.as<int32_t>(), 10000.0f, as_mat(qv, n_virt * (width + dr)));
        be.latent_up_project(as_mat(tz, n_virt * width), units, dn, width, 0.7f,
                             as_mat(o, heads * dn));
        return std::make_pair(download(be, as_mat(qv, n_virt * (width + dr))),
                              download(be, as_mat(o, heads * dn)));
      };
      const auto g = run(*gpu), c = run(*cpu);
      CHECK(all_finite(g.first));
      CHECK(all_finite(g.second));
      CHECK(rel_l2(g.first, c.first) < kBf16Tol);
      CHECK(rel_l2(g.second, c.second) < kBf16Tol);
    }
}
