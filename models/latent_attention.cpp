// MLA / GLA-2 / GLA-4 / MLRA-2 / MLRA-4 attention of one TP rank, in the absorbed form
// (variants.md 5.2-5.4). The cache row of a token is [c_l for each local latent | roped k_pe];
// W_UK is folded into the query (q~ = W_UK^T q_nope) and W_UV applied after attention, per
// (latent, head) pair, so attention reads only the latent cache: the layout the GPU serves.
// Each unit (latent l, heads S) contributes o_h += attn_output_scale * W_UV z for h in S; a
// head's branches from different latents are separate softmaxes summed afterwards (MLRA).
#include "models/latent_attention.h"

#include <stdexcept>

namespace mlra {
namespace {

// Rows of latent l in kv_a_proj_with_mqa, and its norm weight's name.
std::string latent_norm_name(const ModelConfig& c, int l) {
  switch (c.variant.kind) {
    case AttentionKind::kMla: return "attn.kv_a_layernorm.weight";
    case AttentionKind::kGla2: return "attn.kv_a_layernorm_" + std::to_string(l + 1) + ".weight";
    default: return "attn.kv_a_layernorms." + std::to_string(l) + ".weight";
  }
}

// Index g of head h inside latent l's up-projection block (variants.md table 5.3).
int64_t group_index(const ModelConfig& c, int l, int h) {
  const int64_t H = c.n_head;
  switch (c.variant.kind) {
    case AttentionKind::kMla: return h;
    case AttentionKind::kGla2: return h - H / 2 * l;
    case AttentionKind::kGla4: return h - H / 4 * l;
    case AttentionKind::kMlra2: return h - H / 2 * (l % 2);
    default: return h;
  }
}

}  // namespace

LatentAttention::LatentAttention(const ModelConfig& c, const ShardPlan& plan, int64_t layer,
                                 const WeightLoader& w)
    : config_(c), plan_(plan), backend_(w.backend()) {
  const std::string p = layer_prefix(layer);
  const int64_t d = c.n_embd, dn = c.qk_nope_head_dim, dr = c.qk_rope_head_dim, dc = c.latent_dim();
  const int64_t qh = c.q_head_dim(), n_local = int64_t(plan.heads.size());
  head_begin_ = plan.heads.front();
  if (plan.heads.back() - head_begin_ + 1 != n_local)
    throw std::logic_error("latent attention: local heads must be contiguous");

  if (c.variant.gated) gate_ = w.load(p + "attn.gated_proj.weight", {{head_begin_ * dn, (head_begin_ + n_local) * dn}, {0, d}});
  q_a_ = w.load(p + "attn.q_a_proj.weight");
  q_a_norm_ = w.load(p + "attn.q_a_layernorm.weight");
  std::vector<Range> nope_rows, rope_rows;
  for (int h : plan.heads) {
    nope_rows.push_back({h * qh, h * qh + dn});
    rope_rows.push_back({h * qh + dn, h * qh + qh});
  }
  q_b_nope_ = w.load_rows(p + "attn.q_b_proj.weight", nope_rows);
  q_b_rope_ = w.load_rows(p + "attn.q_b_proj.weight", rope_rows);

  std::vector<Range> kv_rows;
  for (int l : plan.latents) {
    kv_rows.push_back({l * dc, (l + 1) * dc});
    latent_norms_.push_back(w.load(p + latent_norm_name(c, l)));
  }
  kv_rows.push_back({c.kv_lora_rank, c.kv_lora_rank + dr});
  kv_a_ = w.load_rows(p + "attn.kv_a_proj_with_mqa.weight", kv_rows);

  for (const auto& u : plan.units) units_.push_back(load_unit(w, p, u));
  c_proj_ = w.load(p + "attn.c_proj.weight", {{0, d}, {head_begin_ * dn, (head_begin_ + n_local) * dn}});
}

// W_UK and W_UV of every head of a unit, each stored [heads, dn, dc].
LatentAttention::Unit LatentAttention::load_unit(const WeightLoader& w, const std::string& p,
                                                 const LatentUnit& u) const {
  const ModelConfig& c = config_;
  const int64_t dn = c.qk_nope_head_dim, dc = c.latent_dim(), n = u.num_heads();
  const int64_t g0 = group_index(c, u.latent, u.head_begin);
  std::vector<float> uk(n * dn * dc), uv(n * dn * dc);
  if (c.variant.kind == AttentionKind::kMla || c.variant.kind == AttentionKind::kGla2) {
    // nn.Linear [G * 2dn, dc]: rows 2dn*g + p (k_nope), 2dn*g + dn + p (v).
    const std::string name = c.variant.kind == AttentionKind::kMla
                                 ? p + "attn.kv_b_proj.weight"
                                 : p + "attn.kv_b_proj_" + std::to_string(u.latent + 1) + ".weight";
    const auto rows = w.read(name, {{2 * dn * g0, 2 * dn * (g0 + n)}, {0, dc}});
    for (int64_t h = 0; h < n; ++h)
      for (int64_t q = 0; q < dn; ++q)
        for (int64_t i = 0; i < dc; ++i) {
          uk[(h * dn + q) * dc + i] = rows[((2 * h) * dn + q) * dc + i];
          uv[(h * dn + q) * dc + i] = rows[((2 * h + 1) * dn + q) * dc + i];
        }
  } else {
    // Bare parameter P [4, dc, G * 2dn], input-major (flag F3).
    const auto blk = w.read(p + "attn.kv_b_proj", {{u.latent, u.latent + 1}, {0, dc}, {2 * dn * g0, 2 * dn * (g0 + n)}});
    const int64_t cols = 2 * dn * n;
    for (int64_t h = 0; h < n; ++h)
      for (int64_t q = 0; q < dn; ++q)
        for (int64_t i = 0; i < dc; ++i) {
          uk[(h * dn + q) * dc + i] = blk[i * cols + 2 * dn * h + q];
          uv[(h * dn + q) * dc + i] = blk[i * cols + 2 * dn * h + dn + q];
        }
  }
  Unit unit;
  unit.spec = u;
  unit.w_uk = w.upload(uk, {n, dn, dc});
  unit.w_uv = w.upload(uv, {n, dn, dc});
  unit.cache_offset = int32_t(plan_.local_latent(u.latent) * dc);
  return unit;
}

void LatentAttention::forward(const MatView& x, const StepContext& step,
                              const PagedCacheView& cache, const MatView& out) {
  const ModelConfig& c = config_;
  Backend& b = backend_;
  const int64_t T = x.rows, dn = c.qk_nope_head_dim, dr = c.qk_rope_head_dim, dc = c.latent_dim();
  const int64_t n_local = int64_t(plan_.heads.size()), n_lat = int64_t(plan_.latents.size());
  int64_t n_virt = 0;
  for (const auto& u : units_) n_virt += u.spec.num_heads();
  const int64_t vw = dc + dr;  // virtual head query width: [q~ | q_pe]
  const DType act = b.act_dtype();

  // Query path: c_q = RMSNorm(W_qa x) * q_scale; q_nope = W_qb_nope c_q.
  Tensor cq_raw = b.alloc({T, c.q_lora_rank}, act), cq = b.alloc({T, c.q_lora_rank}, act);
  b.linear(x, as_mat(q_a_, c.n_embd), as_mat(cq_raw, c.q_lora_rank), 1.0f, 0.0f);
  b.rms_norm(as_mat(cq_raw, c.q_lora_rank), q_a_norm_, c.norm_eps, c.q_scale(), as_mat(cq, c.q_lora_rank));
  Tensor q_nope = b.alloc({T, n_local * dn}, act);
  b.linear(as_mat(cq, c.q_lora_rank), as_mat(q_b_nope_, c.q_lora_rank), as_mat(q_nope, n_local * dn), 1.0f, 0.0f);

  // Virtual heads (unit, head): q~ = W_UK^T q_nope_h, and q_pe_h straight from c_q.
  Tensor qv = b.alloc({T, n_virt * vw}, act);
  const MatView qv_mat = as_mat(qv, n_virt * vw);
  int64_t v0 = 0;
  for (const auto& u : units_) {
    const int64_t n = u.spec.num_heads(), lh = u.spec.head_begin - head_begin_;
    const MatView q_in = as_mat(q_nope, n_local * dn).cols_slice(lh * dn, dn);
    b.linear_batched(q_in, dn, {u.w_uk.data, u.w_uk.dtype, dn, dc, dc}, dn * dc, false,
                     qv_mat.cols_slice(v0 * vw, dc), vw, n, 1.0f, 0.0f);
    const MatView rope_w = as_mat(q_b_rope_, c.q_lora_rank).rows_slice(lh * dr, dr);
    b.linear_batched(as_mat(cq, c.q_lora_rank), 0, rope_w, dr * c.q_lora_rank, true,
                     qv_mat.cols_slice(v0 * vw + dc, dr), vw, n, 1.0f, 0.0f);
    v0 += n;
  }
  b.rope(qv_mat, n_virt, vw, dc, dr, step.positions, c.rope_base);

  // Cache entries: each local latent normed and scaled, k_pe roped, then written to its slot.
  const int64_t width = n_lat * dc + dr;
  Tensor kv_raw = b.alloc({T, n_lat * dc}, act), kv = b.alloc({T, width}, act);
  const MatView kv_a = as_mat(kv_a_, c.n_embd);
  b.linear(x, kv_a.rows_slice(0, n_lat * dc), as_mat(kv_raw, n_lat * dc), 1.0f, 0.0f);
  b.linear(x, kv_a.rows_slice(n_lat * dc, dr), as_mat(kv, width).cols_slice(n_lat * dc, dr), 1.0f, 0.0f);
  for (int64_t l = 0; l < n_lat; ++l)
    b.rms_norm(as_mat(kv_raw, n_lat * dc).cols_slice(l * dc, dc), latent_norms_[l], c.norm_eps,
               c.kv_scale(), as_mat(kv, width).cols_slice(l * dc, dc));
  b.rope(as_mat(kv, width), 1, width, n_lat * dc, dr, step.positions, c.rope_base);
  b.cache_write(as_mat(kv, width), step.slots, cache, 0);

  // Attention of every virtual head over its latent: z = sum softmax * c.
  Tensor z = b.alloc({T, n_virt * dc}, act);
  PagedAttentionArgs a;
  a.q = qv.data;
  a.q_dtype = act;
  a.q_token_stride = n_virt * vw;
  a.q_head_stride = vw;
  a.num_heads = int32_t(n_virt);
  a.a_dim = int32_t(dc);
  a.r_dim = int32_t(dr);
  a.v_dim = int32_t(dc);
  for (const auto& u : units_)
    for (int h = u.spec.head_begin; h < u.spec.head_end; ++h) {
      a.a_offset.push_back(u.cache_offset);
      a.v_offset.push_back(u.cache_offset);
    }
  a.r_offset = int32_t(n_lat * dc);
  a.cache = cache;
  bind_step(a, step);
  a.scale = c.softmax_scale();
  a.out = z.data;
  a.out_dtype = act;
  a.out_token_stride = n_virt * dc;
  a.out_head_stride = dc;
  b.paged_attention(a);

  // o_h = attn_output_scale * sum over the head's units of W_UV z.
  Tensor o = b.alloc({T, n_local * dn}, act);
  const MatView o_mat = as_mat(o, n_local * dn);
  std::vector<bool> written(n_local, false);
  v0 = 0;
  for (const auto& u : units_) {
    const int64_t n = u.spec.num_heads(), lh = u.spec.head_begin - head_begin_;
    const bool first = !written[lh];
    for (int64_t h = lh; h < lh + n; ++h) {
      if (written[h] == first) throw std::logic_error("latent attention: overlapping unit head ranges");
      written[h] = true;
    }
    b.linear_batched(as_mat(z, n_virt * dc).cols_slice(v0 * dc, dc), dc,
                     {u.w_uv.data, u.w_uv.dtype, dn, dc, dc}, dn * dc, true,
                     o_mat.cols_slice(lh * dn, dn), dn, n, c.attn_output_scale(), first ? 0.0f : 1.0f);
    v0 += n;
  }
  if (c.variant.gated) {
    Tensor g = b.alloc({T, n_local * dn}, act);
    b.linear(x, as_mat(gate_, c.n_embd), as_mat(g, n_local * dn), 1.0f, 0.0f);
    b.sigmoid_mul(as_mat(g, n_local * dn), o_mat);
  }
  b.linear(o_mat, as_mat(c_proj_, n_local * dn), out, 1.0f, 0.0f);
}

}  // namespace mlra
