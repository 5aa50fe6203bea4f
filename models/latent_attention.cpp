// MLA / GLA-2 / GLA-4 / MLRA-2 / MLRA-4 attention of one TP rank, in the absorbed form
// (models/VARIANTS.md 5.2-5.4). The cache row of a token is [c_l for each local latent | roped
// k_pe]; W_UK is folded into the query (q~ = W_UK^T q_nope) and W_UV applied after attention, per
// (latent, head) pair, so attention reads only the latent cache: the layout the GPU serves.
// Each unit (latent l, heads S) contributes o_h += attn_output_scale * W_UV z for h in S; a
// head's branches from different latents are separate softmaxes summed afterwards (MLRA).
// TPLA treats the slices of MLA's transformed latent as units (latent_weights.cpp). Prefill chunks
// of MLA / GLA may take the expanded form instead (latent_expanded_prefill.cpp).
#include "models/latent_attention.h"

#include <stdexcept>

#include "models/variant_traits.h"

namespace mlra {
namespace {

std::string latent_norm_name(const ModelConfig& c, int l) {
  switch (c.variant.kind) {
    case AttentionKind::kMla:
      return "attn.kv_a_layernorm.weight";
    case AttentionKind::kGla2:
      return "attn.kv_a_layernorm_" + std::to_string(l + 1) + ".weight";
    default:
      return "attn.kv_a_layernorms." + std::to_string(l) + ".weight";
  }
}

int64_t count_virtual_heads(const std::vector<LatentAttention::Unit>& units) {
  int64_t n = 0;
  for (const auto& u : units) n += u.spec.num_heads();
  return n;
}

int64_t count_virtual_heads(const std::vector<LatentUnit>& units) {
  int64_t n = 0;
  for (const auto& u : units) n += u.num_heads();
  return n;
}

}  // namespace

LatentAttention::LatentAttention(const ModelConfig& c, const ShardPlan& plan, int64_t layer,
                                 const WeightLoader& w)
    : config_(c), plan_(plan), backend_(w.backend()), layer_(layer) {
  const std::string p = layer_prefix(layer);
  const int64_t d = c.n_embd, dn = c.qk_nope_head_dim, dr = c.qk_rope_head_dim, dc = c.latent_dim();
  const int64_t qh = c.q_head_dim(), n_local = int64_t(plan.heads.size());
  head_begin_ = plan.heads.front();
  if (plan.heads.back() - head_begin_ + 1 != n_local)
    throw std::logic_error("latent attention: local heads must be contiguous");
  const Range head_cols{head_begin_ * dn, (head_begin_ + n_local) * dn};
  // The expanded prefill multiplies by W_UK in the [heads, dn, d_c] layout (w_uk).
  expandable_ = latent_expansion_supported(c) &&
                c.latent_prefill.mode != LatentPrefill::kAbsorbed && !plan.units.empty() &&
                count_virtual_heads(plan.units) == n_local;

  if (c.variant.gated) gate_ = w.load(p + "attn.gated_proj.weight", {head_cols, {0, d}});
  q_a_norm_ = w.load(p + "attn.q_a_layernorm.weight");
  std::vector<Range> nope_rows, rope_rows;
  for (int h : plan.heads) {
    nope_rows.push_back({h * qh, h * qh + dn});
    rope_rows.push_back({h * qh + dn, h * qh + qh});
  }
  q_b_nope_ = w.load_rows(p + "attn.q_b_proj.weight", nope_rows);
  q_b_rope_ = w.load_rows(p + "attn.q_b_proj.weight", rope_rows);
  const std::string kv_a = p + "attn.kv_a_proj_with_mqa.weight";
  // Every projection of x in one weight, one product: [W_qa; W_kv latent rows; W_kv rope rows]
  // (TPLA keeps k_pe apart: its cache row is not [latent | k_pe] of the raw latent).
  std::vector<float> x_proj = w.read(p + "attn.q_a_proj.weight");
  auto append_rows = [&](int64_t r0, int64_t r1) {
    const std::vector<float> part = w.read(kv_a, {{r0, r1}, {0, d}});
    x_proj.insert(x_proj.end(), part.begin(), part.end());
  };
  if (c.tpla()) {
    append_rows(0, dc);
    kv_rope_ = w.load(kv_a, {{c.kv_lora_rank, c.kv_lora_rank + dr}, {0, d}});
    load_tpla(w, p, layer);
  } else {
    std::vector<float> norms;
    for (int l : plan.latents) {
      append_rows(l * dc, (l + 1) * dc);
      const std::vector<float> g = w.read(p + latent_norm_name(c, l));
      norms.insert(norms.end(), g.begin(), g.end());
    }
    append_rows(c.kv_lora_rank, c.kv_lora_rank + dr);
    latent_norms_ = w.upload(norms, {int64_t(norms.size())});
    const Backend::LatentUkLayouts layouts =
        backend_.latent_uk_layouts(int64_t(plan.units.size()), dc);
    for (const auto& unit : plan.units) {
      std::vector<float> uk, uv;
      read_up_projections(c, w, p, unit, uk, uv);
      Unit u = make_unit(w, unit, dn, dc, uk, uv, layouts, expandable_);
      u.cache_offset = int32_t(plan.local_latent(unit.latent) * dc);
      units_.push_back(std::move(u));
    }
  }
  x_proj_ = w.upload(x_proj, {int64_t(x_proj.size()) / d, d});
  c_proj_ = w.load(p + "attn.c_proj.weight", {{0, d}, head_cols});
}

// The backend's view of units: heads relative to first_head, virtual heads in unit order.
std::vector<Backend::LatentUnitView> LatentAttention::unit_views(const std::vector<Unit>& units,
                                                                 int64_t first_head) const {
  std::vector<Backend::LatentUnitView> views;
  int64_t v0 = 0;
  for (const auto& u : units) {
    views.push_back(
        {u.w_uk, u.w_uv, u.spec.head_begin - first_head, u.spec.num_heads(), v0, u.w_uk_t});
    v0 += u.spec.num_heads();
  }
  return views;
}

// Queries of the virtual heads (unit, head): [q~ = W_UK^T q_nope_h | q_pe_h], q_pe straight from
// c_q through the head's rope rows of q_b, then roped. Returns [T, n_virtual * (width + dr)].
Tensor LatentAttention::virtual_queries(const std::vector<Unit>& units, int64_t width,
                                        const MatView& cq, const MatView& q_nope,
                                        const StepContext& step) {
  const ModelConfig& c = config_;
  Backend& b = backend_;
  const int64_t T = step.num_tokens, dn = c.qk_nope_head_dim, dr = c.qk_rope_head_dim;
  const int64_t n_local = int64_t(plan_.heads.size()), n_virt = count_virtual_heads(units);
  const int64_t vw = width + dr;
  Tensor qv = b.alloc({T, n_virt * vw}, b.act_dtype());
  if (cq.rows != T || q_nope.rows != T || q_nope.cols != n_local * dn)
    throw std::logic_error("latent attention: query rows do not match the step");
  b.latent_queries(q_nope, cq, as_mat(q_b_rope_, c.q_lora_rank), unit_views(units, head_begin_), dn,
                   dr, width, step.positions, c.rope_base, as_mat(qv, n_virt * vw));
  return qv;
}

// z = sum_tau softmax(scale * (q~ . c + q_pe . k_pe)) c for every virtual head.
Tensor LatentAttention::attend(const std::vector<Unit>& units, int64_t width, const Tensor& qv,
                               const PagedCacheView& cache, int32_t r_offset,
                               const StepContext& step) {
  Backend& b = backend_;
  const int64_t dr = config_.qk_rope_head_dim, n_virt = count_virtual_heads(units);
  Tensor z = b.alloc({step.num_tokens, n_virt * width}, b.act_dtype());
  PagedAttentionArgs a;
  a.kernel = traits(config_.variant.kind).kernel;
  a.q = qv.data;
  a.q_dtype = qv.dtype;
  a.q_token_stride = n_virt * (width + dr);
  a.q_head_stride = width + dr;
  a.num_heads = int32_t(n_virt);
  a.a_dim = int32_t(width);
  a.r_dim = int32_t(dr);
  a.v_dim = int32_t(width);
  for (const auto& u : units)
    for (int h = u.spec.head_begin; h < u.spec.head_end; ++h) {
      a.a_offset.push_back(u.cache_offset);
      a.v_offset.push_back(u.cache_offset);
    }
  a.r_offset = r_offset;
  a.cache = cache;
  bind_step(a, step);
  a.scale = config_.softmax_scale();
  a.out = z.data;
  a.out_dtype = z.dtype;
  a.out_token_stride = n_virt * width;
  a.out_head_stride = width;
  b.paged_attention(a);
  return z;
}

// o_h = alpha * sum over the head's units of W_UV z.
void LatentAttention::up_project(const std::vector<Unit>& units, int64_t width, const Tensor& z,
                                 const MatView& o, float alpha) {
  const int64_t dn = config_.qk_nope_head_dim, n_virt = count_virtual_heads(units);
  backend_.latent_up_project(as_mat(z, n_virt * width),
                             unit_views(units, units.front().spec.head_begin), dn, width, alpha, o);
}

void LatentAttention::observe_latents(LatentObserver& observer, const MatView& latents) {
  std::vector<float> host(static_cast<size_t>(latents.rows * latents.cols));
  backend_.download_f32(latents, host.data());
  observer.observe(layer_, host.data(), latents.rows, latents.cols);
}

void LatentAttention::forward(const MatView& x, const StepContext& step,
                              const PagedCacheView& cache, const MatView& out) {
  const ModelConfig& c = config_;
  Backend& b = backend_;
  const int64_t T = x.rows, dn = c.qk_nope_head_dim, dr = c.qk_rope_head_dim, dc = c.latent_dim();
  const int64_t n_local = int64_t(plan_.heads.size()), n_lat = int64_t(plan_.latents.size());
  const int64_t width = plan_.latent_width, row = n_lat * width + dr;
  const DType act = b.act_dtype();

  // xp = [W_qa x | raw latents | k_pe (not TPLA)], one product.
  const int64_t raw_width = c.tpla() ? dc : n_lat * dc, r_q = c.q_lora_rank;
  const int64_t xp_width = r_q + raw_width + (c.tpla() ? 0 : dr);
  Tensor xp = b.alloc({T, xp_width}, act);
  const MatView xp_mat = as_mat(xp, xp_width);
  b.linear(x, as_mat(x_proj_, c.n_embd), xp_mat, 1.0f, 0.0f);
  const MatView raw = xp_mat.cols_slice(r_q, raw_width);

  // Tokens [0, A) attend in the absorbed form, the expanded suffix [A, T) (prefill chunks of MLA /
  // GLA, latent_expansion.h) in the expanded one; its rows need no absorbed queries.
  const LatentExpansion* expansion =
      expandable_ && step.expansion && step.expansion->active() ? step.expansion : nullptr;
  const int64_t A = expansion ? expansion->first_token : T;
  StepContext absorbed = step;
  absorbed.num_tokens = int32_t(A);
  if (expansion) absorbed.num_seqs = expansion->first_seq;

  // Query path: c_q = RMSNorm(W_qa x) * q_scale; q_nope = W_qb_nope c_q.
  Tensor cq = b.alloc({T, c.q_lora_rank}, act);
  const MatView cq_mat = as_mat(cq, c.q_lora_rank);
  b.rms_norm(xp_mat.cols_slice(0, r_q), q_a_norm_, c.norm_eps, c.q_scale(), cq_mat);
  Tensor q_nope, qv;
  if (A > 0) {
    q_nope = b.alloc({A, n_local * dn}, act);
    b.linear(cq_mat.rows_slice(0, A), as_mat(q_b_nope_, c.q_lora_rank),
             as_mat(q_nope, n_local * dn), 1.0f, 0.0f);
    qv = virtual_queries(units_, width, cq_mat.rows_slice(0, A), as_mat(q_nope, n_local * dn),
                         absorbed);
  }

  // Cache entries: latents normed and scaled (TPLA: the whole latent, then its transformed local
  // slices), k_pe roped; written to their slots before attention, in one op.
  // Not TPLA: the latents are normed in place, so [latents | k_pe] of xp is the cache row.
  Tensor kv, normed;
  MatView kv_mat = xp_mat.cols_slice(r_q, row);
  if (c.tpla()) {
    kv = b.alloc({T, row}, act);
    kv_mat = as_mat(kv, row);
    b.linear(x, as_mat(kv_rope_, c.n_embd), kv_mat.cols_slice(n_lat * width, dr), 1.0f, 0.0f);
    normed = b.alloc({T, dc}, act);
    b.rms_norm(raw, ones_, c.norm_eps, c.kv_scale(), as_mat(normed, dc));
    b.linear(as_mat(normed, dc), as_mat(slice_proj_, dc), kv_mat.cols_slice(0, n_lat * width), 1.0f,
             0.0f);
  }
  // Not TPLA: every local latent normed alone (groups n_lat); TPLA: already normed (groups 0).
  b.latent_cache_write(kv_mat, latent_norms_, c.tpla() ? 0 : n_lat, c.norm_eps, c.kv_scale(), dr,
                       step.positions, c.rope_base, step.slots, cache);
  // The latent columns are final here (the rope touched only k_pe).
  if (step.latent_observer)
    observe_latents(*step.latent_observer, kv_mat.cols_slice(0, n_lat * width));

  const bool exact =
      c.tpla() && c.tpla_options.pd_separation && step.host && step.host->has_fresh_prefill();
  // With an exact prefill, rows [0, T) hold the TPLA output and rows [T, 2T) the exact one; a
  // row gather then picks per token.
  Tensor o = b.alloc({exact ? 2 * T : T, n_local * dn}, act);
  const MatView o_all = as_mat(o, n_local * dn), o_mat = o_all.rows_slice(0, T);
  if (A > 0) {
    Tensor z = attend(units_, width, qv, cache, int32_t(n_lat * width), absorbed);
    up_project(units_, width, z, o_mat.rows_slice(0, A), c.tpla() ? 1.0f : c.attn_output_scale());
  }
  if (expansion)
    expanded_prefill(cq_mat.rows_slice(A, T - A), step, *expansion, cache,
                     o_mat.rows_slice(A, T - A));
  MatView o_final = o_mat;
  Tensor picked;
  if (exact) {
    exact_prefill(cq, q_nope, normed, x, step, o_all.rows_slice(T, T));
    std::vector<int32_t> pick(static_cast<size_t>(T));
    for (int64_t t = 0; t < T; ++t)
      pick[size_t(t)] = int32_t(step.host->in_fresh_prefill(int32_t(t)) ? T + t : t);
    Tensor idx = b.alloc({T}, DType::kI32);
    b.upload(idx, pick.data(), pick.size() * sizeof(int32_t));
    picked = b.alloc({T, n_local * dn}, act);
    o_final = as_mat(picked, n_local * dn);
    b.embed(idx.as<int32_t>(), T, o_all, o_final);
  }
  if (c.variant.gated) {
    // The gate stays f32 (cuBLAS accumulates in f32 anyway): one bf16 rounding fewer on the
    // gated path, the least accurate variant on GPU otherwise.
    Tensor g = b.alloc({T, n_local * dn}, DType::kF32);
    b.linear(x, as_mat(gate_, c.n_embd), as_mat(g, n_local * dn), 1.0f, 0.0f);
    b.sigmoid_mul(as_mat(g, n_local * dn), o_final);
  }
  b.linear(o_final, as_mat(c_proj_, n_local * dn), out, 1.0f, 0.0f);
}

}  // namespace mlra
