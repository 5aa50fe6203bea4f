// The expanded form of MLA / GLA attention for a step's prefill chunks (latent_expansion.h): the
// same scores and outputs as the absorbed form, (W_UK^T q_nope) . c = q_nope . (W_UK c) and
// W_UV sum p c = sum p (W_UV c), computed per head with d_n-wide keys and values instead of d_c.
// Cheaper once a sequence brings a few hundred tokens: the up-projection of its cached latents
// costs 4 d_c d_n per position and head, while each (query, key) pair saves 4 (d_c - d_n).
// Every rank expands its own heads from its own latents; nothing crosses ranks.
#include <stdexcept>

#include "models/latent_attention.h"

namespace mlra {

void LatentAttention::expanded_prefill(const MatView& cq, const StepContext& step,
                                       const LatentExpansion& plan, const PagedCacheView& cache,
                                       const MatView& o) {
  const ModelConfig& c = config_;
  Backend& b = backend_;
  const int64_t E = plan.num_tokens, R = plan.scratch_rows, dn = c.qk_nope_head_dim;
  const int64_t dr = c.qk_rope_head_dim, dc = c.latent_dim(), r_q = c.q_lora_rank;
  const int64_t H = int64_t(plan_.heads.size()), n_lat = int64_t(plan_.latents.size());
  const int64_t latent_cols = n_lat * plan_.latent_width, qw = dn + dr;
  if (cq.rows != E || o.rows != E || o.cols != H * dn)
    throw std::logic_error("expanded prefill: rows do not match the plan");

  // Queries [q_nope_h | RoPE(q_pe_h)] per head, straight from c_q (the absorbed rows' q_nope
  // product skips these tokens).
  Tensor q = b.alloc({E, H * qw}, b.act_dtype());
  const MatView q_mat = as_mat(q, H * qw);
  b.linear_batched(cq, 0, {q_b_nope_.data, q_b_nope_.dtype, dn, r_q, r_q}, dn * r_q, true,
                   q_mat.cols_slice(0, dn), qw, H, 1.0f, 0.0f);
  b.linear_batched(cq, 0, {q_b_rope_.data, q_b_rope_.dtype, dr, r_q, r_q}, dr * r_q, true,
                   q_mat.cols_slice(dn, dr), qw, H, 1.0f, 0.0f);
  b.rope(q_mat, H, qw, dn, dr, step.positions + plan.first_token, c.rope_base);

  // Scratch rows [K_nope of every head | V of every head | k_pe]: latents and k_pe gathered from
  // the cache (this step's rows are written already; an FP8 cache's are dequantized), K_nope =
  // W_UK c, V = alpha W_UV c. The scratch itself is a plain cache of the backend's dtype.
  Tensor latents = b.alloc({R, latent_cols}, b.act_dtype());
  const MatView lat_mat = as_mat(latents, latent_cols);
  b.cache_gather(cache, plan.gather_slots, R, 0, lat_mat);
  const int64_t row = 2 * H * dn + dr;
  Tensor scratch = b.alloc({R, row}, b.cache_dtype());
  const MatView scratch_mat = as_mat(scratch, row);
  b.cache_gather(cache, plan.gather_slots, R, int32_t(latent_cols),
                 scratch_mat.cols_slice(2 * H * dn, dr));
  const float alpha = c.attn_output_scale();
  for (const Unit& u : units_) {
    const int64_t h0 = u.spec.head_begin - head_begin_, n = u.spec.num_heads();
    const MatView c_u = lat_mat.cols_slice(u.cache_offset, dc);
    b.linear(c_u, {u.w_uk.data, u.w_uk.dtype, n * dn, dc, dc},
             scratch_mat.cols_slice(h0 * dn, n * dn), 1.0f, 0.0f);
    b.linear(c_u, {u.w_uv.data, u.w_uv.dtype, n * dn, dc, dc},
             scratch_mat.cols_slice((H + h0) * dn, n * dn), alpha, 0.0f);
  }

  PagedAttentionArgs a;
  a.kernel = AttentionKernel::kKvSharedRope;  // the expanded form's own scratch layout
  a.q = q.data;
  a.q_dtype = q.dtype;
  a.q_token_stride = H * qw;
  a.q_head_stride = qw;
  a.num_heads = int32_t(H);
  a.a_dim = int32_t(dn);
  a.r_dim = int32_t(dr);
  a.v_dim = int32_t(dn);
  for (int64_t h = 0; h < H; ++h) {
    a.a_offset.push_back(int32_t(h * dn));
    a.v_offset.push_back(int32_t((H + h) * dn));
  }
  a.r_offset = int32_t(2 * H * dn);
  a.cache = {scratch.data, scratch.dtype, int32_t(R / LatentExpansion::kScratchPage),
             LatentExpansion::kScratchPage, int32_t(row)};
  a.num_tokens = int32_t(E);
  a.num_seqs = plan.num_seqs;
  a.token_seq = plan.token_seq;
  a.token_pos = step.positions + plan.first_token;
  a.page_indptr = plan.page_indptr;
  a.page_indices = plan.page_indices;
  a.scale = c.softmax_scale();
  a.out = o.data;
  a.out_dtype = o.dtype;
  a.out_token_stride = o.ld;
  a.out_head_stride = dn;
  b.paged_attention(a);
}

}  // namespace mlra
