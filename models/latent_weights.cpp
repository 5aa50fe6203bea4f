// Weight preparation for LatentAttention: reading the up-projections of every variant's layout,
// and folding TPLA's transform U and the latent RMSNorm gain g into the weights at load time:
//   c = s * g (.) n(a)  ->  c' = U^T c = (diag(g) U)^T (s n(a)),   W_UK' = W_UK U, W_UV' = W_UV U.
// The latent norm n(a) is computed over the full latent on every rank (kv_a is replicated for
// MLA), so only the softmax is split by TPLA: RMSNorm stays exact.
#include <stdexcept>

#include "models/latent_attention.h"
#include "models/tpla.h"

namespace mlra {
namespace {

int64_t group_index(const ModelConfig& c, int l, int h) {
  const int64_t H = c.n_head;
  switch (c.variant.kind) {
    case AttentionKind::kGla2:
      return h - H / 2 * l;
    case AttentionKind::kGla4:
      return h - H / 4 * l;
    case AttentionKind::kMlra2:
      return h - H / 2 * (l % 2);
    default:
      return h;  // MLA, MLRA-4
  }
}

// [heads, dn, dc] x U[:, cols [c0, c0 + w)] -> [heads, dn, w]
std::vector<float> times_columns(const std::vector<float>& m, int64_t rows, int64_t dc,
                                 const std::vector<float>& u, int64_t c0, int64_t w) {
  std::vector<float> out(static_cast<size_t>(rows * w), 0.0f);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < dc; ++i) {
      const float v = m[size_t(r * dc + i)];
      for (int64_t j = 0; j < w; ++j) out[size_t(r * w + j)] += v * u[size_t(i * dc + c0 + j)];
    }
  return out;
}

}  // namespace

std::vector<float> transpose_heads(const std::vector<float>& m, int64_t heads, int64_t rows,
                                   int64_t cols) {
  std::vector<float> out(m.size());
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c)
        out[size_t((h * cols + c) * rows + r)] = m[size_t((h * rows + r) * cols + c)];
  return out;
}

LatentAttention::Unit LatentAttention::make_unit(const WeightLoader& w, const LatentUnit& spec,
                                                 int64_t dn, int64_t width,
                                                 const std::vector<float>& uk,
                                                 const std::vector<float>& uv,
                                                 Backend::LatentUkLayouts layouts,
                                                 bool keep_in_by_out) {
  const int64_t n = spec.num_heads();
  if (int64_t(uk.size()) != n * dn * width || int64_t(uv.size()) != n * dn * width)
    throw std::logic_error("latent attention: W_UK / W_UV of a unit must be [heads, dn, width]");
  if (!layouts.in_by_out && !layouts.out_by_in)
    throw std::logic_error("latent attention: the backend reads no copy of W_UK");
  Unit u;
  u.spec = spec;
  if (layouts.in_by_out || keep_in_by_out) u.w_uk = w.upload(uk, {n, dn, width});
  if (layouts.out_by_in) u.w_uk_t = w.upload(transpose_heads(uk, n, dn, width), {n, width, dn});
  u.w_uv = w.upload(uv, {n, dn, width});
  return u;
}

void read_up_projections(const ModelConfig& c, const WeightLoader& w, const std::string& p,
                         const LatentUnit& u, std::vector<float>& uk, std::vector<float>& uv) {
  const int64_t dn = c.qk_nope_head_dim, dc = c.latent_dim(), n = u.num_heads();
  const int64_t g0 = group_index(c, c.tpla() ? 0 : u.latent, u.head_begin);
  uk.assign(size_t(n * dn * dc), 0.0f);
  uv.assign(size_t(n * dn * dc), 0.0f);
  if (c.variant.kind == AttentionKind::kMla || c.variant.kind == AttentionKind::kGla2) {
    // nn.Linear [G * 2dn, dc]: rows 2dn*g + p give k_nope, rows 2dn*g + dn + p give v.
    const std::string name = c.variant.kind == AttentionKind::kMla
                                 ? p + "attn.kv_b_proj.weight"
                                 : p + "attn.kv_b_proj_" + std::to_string(u.latent + 1) + ".weight";
    const auto rows = w.read(name, {{2 * dn * g0, 2 * dn * (g0 + n)}, {0, dc}});
    for (int64_t h = 0; h < n; ++h)
      for (int64_t q = 0; q < dn; ++q)
        for (int64_t i = 0; i < dc; ++i) {
          uk[size_t((h * dn + q) * dc + i)] = rows[size_t(((2 * h) * dn + q) * dc + i)];
          uv[size_t((h * dn + q) * dc + i)] = rows[size_t(((2 * h + 1) * dn + q) * dc + i)];
        }
    return;
  }
  // Bare parameter P [4, dc, G * 2dn], input-major (flag F3).
  const auto blk = w.read(p + "attn.kv_b_proj",
                          {{u.latent, u.latent + 1}, {0, dc}, {2 * dn * g0, 2 * dn * (g0 + n)}});
  const int64_t cols = 2 * dn * n;
  for (int64_t h = 0; h < n; ++h)
    for (int64_t q = 0; q < dn; ++q)
      for (int64_t i = 0; i < dc; ++i) {
        uk[size_t((h * dn + q) * dc + i)] = blk[size_t(i * cols + 2 * dn * h + q)];
        uv[size_t((h * dn + q) * dc + i)] = blk[size_t(i * cols + 2 * dn * h + dn + q)];
      }
}

void LatentAttention::load_tpla(const WeightLoader& w, const std::string& p, int64_t layer) {
  const ModelConfig& c = config_;
  const int64_t dn = c.qk_nope_head_dim, dc = c.latent_dim(), width = plan_.latent_width;
  const std::vector<float> u = tpla_layer_transform(c, layer);
  const std::vector<float> g = w.read(p + "attn.kv_a_layernorm.weight");
  // M = diag(g) U; slice_proj rows are M's columns of the local slices, exact_proj all of them.
  auto m_transposed = [&](int64_t c0, int64_t n) {
    std::vector<float> mt(static_cast<size_t>(n * dc));
    for (int64_t j = 0; j < n; ++j)
      for (int64_t i = 0; i < dc; ++i)
        mt[size_t(j * dc + i)] = g[size_t(i)] * u[size_t(i * dc + c0 + j)];
    return mt;
  };
  std::vector<float> slices;
  for (int s : plan_.latents) {
    auto part = m_transposed(s * width, width);
    slices.insert(slices.end(), part.begin(), part.end());
  }
  slice_proj_ = w.upload(slices, {int64_t(plan_.latents.size()) * width, dc});
  ones_ = w.upload(std::vector<float>(size_t(dc), 1.0f), {dc});
  // TPLA is never expanded: only the backend reads W_UK.
  const Backend::LatentUkLayouts layouts =
      backend_.latent_uk_layouts(int64_t(plan_.units.size()), width);
  for (const auto& unit : plan_.units) {
    std::vector<float> uk, uv;
    read_up_projections(c, w, p, unit, uk, uv);
    const int64_t rows = unit.num_heads() * dn, c0 = unit.latent * width;
    Unit out = make_unit(w, unit, dn, width, times_columns(uk, rows, dc, u, c0, width),
                         times_columns(uv, rows, dc, u, c0, width), layouts, false);
    out.cache_offset = int32_t(plan_.local_latent(unit.latent) * width);
    units_.push_back(std::move(out));
  }
  if (c.tpla_options.pd_separation) {
    exact_proj_ = w.upload(m_transposed(0, dc), {dc, dc});
    const LatentUnit all{0, 0, int(c.n_head)};
    std::vector<float> uk, uv;
    read_up_projections(c, w, p, all, uk, uv);
    exact_ = make_unit(w, all, dn, dc, times_columns(uk, c.n_head * dn, dc, u, 0, dc),
                       times_columns(uv, c.n_head * dn, dc, u, 0, dc),
                       backend_.latent_uk_layouts(1, dc), false);
  }
}

}  // namespace mlra
