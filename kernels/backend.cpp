// Defaults of the optional Backend capabilities: a backend that cannot record says so clearly.
#include "kernels/backend.h"

#include <algorithm>
#include <stdexcept>

namespace mlra {

void Backend::begin_capture() {
  throw std::logic_error("backend " + name() + " cannot record ops (supports_capture() is false)");
}

void Backend::rms_norm_groups(const MatView& x, const Tensor& w, int64_t groups, float eps,
                              float scale, const MatView& out) {
  if (groups < 1 || x.cols % groups != 0 || w.numel() != x.cols)
    throw std::invalid_argument("rms_norm_groups: columns must split into equal groups of w");
  const int64_t g = x.cols / groups;
  for (int64_t i = 0; i < groups; ++i) {
    Tensor wg = w;
    wg.data = static_cast<char*>(w.data) + i * g * int64_t(dtype_size(w.dtype));
    wg.shape = {g};
    rms_norm(x.cols_slice(i * g, g), wg, eps, scale, out.cols_slice(i * g, g));
  }
}

void Backend::add_rms_norm(const MatView& delta, const MatView& acc, const Tensor& w, float eps,
                           const MatView& out) {
  add(delta, acc);
  rms_norm(acc, w, eps, 1.0f, out);
}

void Backend::linear_swiglu(const MatView& x, const MatView& w12, const MatView& out) {
  if (w12.rows % 2 != 0 || out.cols * 2 != w12.rows || out.rows != x.rows)
    throw std::invalid_argument("linear_swiglu: w12 must be [2F, K] and out [M, F]");
  const int64_t f = out.cols;
  Tensor a12 = alloc({x.rows, 2 * f}, act_dtype());
  const MatView a = as_mat(a12, 2 * f);
  linear(x, w12, a, 1.0f, 0.0f);
  silu_mul(a.cols_slice(0, f), a.cols_slice(f, f), out);
}

void Backend::mlp_block(const MlpBlockArgs& m) {
  add_rms_norm(m.delta, m.acc, m.ln2, m.eps, m.h);
  linear_swiglu(m.h, m.w12, m.a);
  linear(m.a, m.proj, m.y, 1.0f, 0.0f);
}

void Backend::latent_cache_write(const MatView& row, const Tensor& w, int64_t groups, float eps,
                                 float scale, int64_t rot_dim, const int32_t* positions,
                                 float rope_base, const int32_t* slots,
                                 const PagedCacheView& cache) {
  const int64_t latents = row.cols - rot_dim;
  if (rot_dim <= 0 || latents < 0 || groups < 0)
    throw std::invalid_argument("latent_cache_write: row must be [latents | rot_dim k_pe]");
  if (groups > 0) {
    const MatView lat = row.cols_slice(0, latents);
    rms_norm_groups(lat, w, groups, eps, scale, lat);
  }
  rope(row, 1, row.cols, latents, rot_dim, positions, rope_base);
  cache_write(row, slots, cache, 0);
}

void Backend::latent_queries(const MatView& q_nope, const MatView& cq, const MatView& rope_w,
                             const std::vector<LatentUnitView>& units, int64_t dn, int64_t dr,
                             int64_t width, const int32_t* positions, float rope_base,
                             const MatView& qv) {
  const int64_t vw = width + dr;
  int64_t n_virt = 0;
  for (const auto& u : units) {
    const MatView q_in = q_nope.cols_slice(u.head0 * dn, dn),
                  q_out = qv.cols_slice(u.v0 * vw, width);
    const bool out_by_in = u.w_uk_t.data != nullptr;
    const Tensor& w = out_by_in ? u.w_uk_t : u.w_uk;
    if (w.data == nullptr || w.numel() != u.n_heads * dn * width)
      throw std::invalid_argument(
          "latent_queries: a unit's W_UK must be [n_heads, dn, width] "
          "(w_uk) or [n_heads, width, dn] (w_uk_t)");
    if (out_by_in)
      linear_batched(q_in, dn, {w.data, w.dtype, width, dn, dn}, dn * width, true, q_out, vw,
                     u.n_heads, 1.0f, 0.0f);
    else
      linear_batched(q_in, dn, {w.data, w.dtype, dn, width, width}, dn * width, false, q_out, vw,
                     u.n_heads, 1.0f, 0.0f);
    // q_pe depends on the head only: units over the heads of an earlier unit copy its values.
    const MatView pe = qv.cols_slice(u.v0 * vw + width, dr);
    bool copied = false;
    for (const auto& e : units) {
      if (&e == &u) break;
      if (e.head0 == u.head0 && e.n_heads == u.n_heads) {
        copied = copy_rows_batched(qv.cols_slice(e.v0 * vw + width, dr), vw, pe, vw, u.n_heads);
        break;
      }
    }
    if (!copied)
      linear_batched(cq, 0, rope_w.rows_slice(u.head0 * dr, dr), dr * rope_w.ld, true, pe, vw,
                     u.n_heads, 1.0f, 0.0f);
    n_virt = std::max(n_virt, u.v0 + u.n_heads);
  }
  rope(qv, n_virt, vw, width, dr, positions, rope_base);
}

void Backend::latent_up_project(const MatView& z, const std::vector<LatentUnitView>& units,
                                int64_t dn, int64_t width, float alpha, const MatView& o) {
  const int64_t n_out = o.cols / dn;
  std::vector<bool> written(static_cast<size_t>(n_out), false);
  for (const auto& u : units) {
    if (u.head0 < 0 || u.head0 + u.n_heads > n_out)
      throw std::logic_error("latent_up_project: unit heads outside the output");
    const bool first = !written[size_t(u.head0)];
    for (int64_t h = u.head0; h < u.head0 + u.n_heads; ++h) {
      if (written[size_t(h)] == first)
        throw std::logic_error("latent_up_project: overlapping unit head ranges");
      written[size_t(h)] = true;
    }
    if (u.w_uv.data == nullptr || u.w_uv.numel() != u.n_heads * dn * width)
      throw std::invalid_argument("latent_up_project: a unit's W_UV must be [n_heads, dn, width]");
    linear_batched(z.cols_slice(u.v0 * width, width), width,
                   {u.w_uv.data, u.w_uv.dtype, dn, width, width}, dn * width, true,
                   o.cols_slice(u.head0 * dn, dn), dn, u.n_heads, alpha, first ? 0.0f : 1.0f);
  }
}

void Backend::attn_block(const AttnBlockArgs& a) {
  const int64_t r_q = a.cq.cols;
  if (a.xp.cols < r_q + a.dr || a.xp.rows != a.x.rows || a.cq.rows != a.x.rows)
    throw std::invalid_argument("attn_block: xp must be [T, r_q + latents + dr], cq [T, r_q]");
  linear(a.x, a.x_proj, a.xp, 1.0f, 0.0f);
  rms_norm(a.xp.cols_slice(0, r_q), a.q_norm, a.eps, a.q_scale, a.cq);
  linear(a.cq, a.q_b_nope, a.q_nope, 1.0f, 0.0f);
  latent_queries(a.q_nope, a.cq, a.rope_w, a.units, a.dn, a.dr, a.width, a.positions, a.rope_base,
                 a.qv);
  latent_cache_write(a.xp.cols_slice(r_q, a.xp.cols - r_q), a.latent_norms, a.groups, a.eps,
                     a.kv_scale, a.dr, a.positions, a.rope_base, a.slots, a.cache);
}

void Backend::cache_gather(const PagedCacheView& cache, const int32_t* slots, int64_t n,
                           int32_t col_offset, const MatView& out) {
  if (cache.encoding != CacheEncoding::kPlain)
    throw std::logic_error("backend " + name() + " cannot read an FP8 cache");
  if (col_offset < 0 || col_offset + out.cols > cache.row_width)
    throw std::invalid_argument("cache_gather: columns outside the cache row");
  const MatView rows{cache.data, cache.dtype, cache.num_pages * cache.page_size, cache.row_width,
                     cache.row_width};
  embed(slots, n, rows.cols_slice(col_offset, out.cols), out);
}

std::unique_ptr<CapturedOps> Backend::end_capture() {
  throw std::logic_error("backend " + name() + " cannot record ops (supports_capture() is false)");
}

}  // namespace mlra
