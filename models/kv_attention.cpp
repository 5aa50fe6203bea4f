// K/V-cache attention for the baselines (models/VARIANTS.md 4.1-4.5), one TP rank.
#include "models/kv_attention.h"

#include <stdexcept>

#include "models/tensor_layout.h"
#include "models/variant_traits.h"

namespace mlra {

KvAttention::KvAttention(const ModelConfig& c, const ShardPlan& plan, int64_t layer,
                         const WeightLoader& w)
    : config_(c), plan_(plan), backend_(w.backend()) {
  const std::string p = layer_prefix(layer);
  const int64_t d = c.n_embd, hd = c.head_dim, n_local = int64_t(plan.heads.size());
  const int64_t kv0 = plan.kv_heads.front(), n_kv = int64_t(plan.kv_heads.size());
  head_begin_ = plan.heads.front();
  const Range head_rows{head_begin_ * hd, (head_begin_ + n_local) * hd};
  const Range kv_rows{kv0 * hd, (kv0 + n_kv) * hd};
  switch (c.variant.kind) {
    case AttentionKind::kMha:
    case AttentionKind::kGqa:
    case AttentionKind::kMqa:
      if (c.variant.gated) gate_ = w.load(p + "attn.c_gated.weight", {head_rows, {0, d}});
      q_ = w.load(p + "attn.c_q.weight", {head_rows, {0, d}});
      k_ = w.load(p + "attn.c_k.weight", {kv_rows, {0, d}});
      v_ = w.load(p + "attn.c_v.weight", {kv_rows, {0, d}});
      break;
    case AttentionKind::kGta:
      q_ = w.load(p + "attn.c_q.weight", {head_rows, {0, d}});
      k_ = w.load(p + "attn.kv_proj.weight", {kv_rows, {0, d}});
      v_ = w.load(p + "attn.W_rope_k.weight");
      break;
    case AttentionKind::kMfa:
      mfa_cq_ = w.load(p + "attn.c_q.weight");
      mfa_norm_ = w.load(p + "attn.q_layernorm.weight");
      q_ = w.load(p + "attn.w_q.weight", {head_rows, {0, c.share_q_dim}});
      k_ = w.load(p + "attn.c_k.weight");
      v_ = w.load(p + "attn.c_v.weight");
      break;
    case AttentionKind::kTpa: {
      const std::string f = p + "attn.c_qkv.";
      a_q_ = w.load(f + "W_A_q.weight",
                    {{head_begin_ * c.q_rank, (head_begin_ + n_local) * c.q_rank}, {0, d}});
      a_k_ = w.load(f + "W_A_k.weight",
                    {{head_begin_ * c.rank, (head_begin_ + n_local) * c.rank}, {0, d}});
      a_v_ = w.load(f + "W_A_v.weight",
                    {{head_begin_ * c.rank, (head_begin_ + n_local) * c.rank}, {0, d}});
      b_q_ = w.load(f + "W_B_q.weight");
      b_k_ = w.load(f + "W_B_k.weight");
      b_v_ = w.load(f + "W_B_v.weight");
      break;
    }
    default:
      throw std::logic_error("KvAttention: not a K/V-cache variant");
  }
  c_proj_ = w.load(p + "attn.c_proj.weight", {{0, d}, head_rows});
}

// TPA: q_h = (1/R_q) sum_r A_q[h,r] B_q[r] (B_q, B_k roped), likewise K and V with 1/R.
void KvAttention::project_tpa(const MatView& x, const StepContext& step, Tensor& q, Tensor& k,
                              Tensor& v) {
  const ModelConfig& c = config_;
  Backend& b = backend_;
  const int64_t T = x.rows, hd = c.head_dim, n = int64_t(plan_.heads.size());
  const DType act = b.act_dtype();
  auto combine = [&](const Tensor& a_w, const Tensor& b_w, int64_t r, bool rope, Tensor& dst) {
    Tensor a = b.alloc({T, n * r}, act), f = b.alloc({T, r * hd}, act);
    b.linear(x, as_mat(a_w, c.n_embd), as_mat(a, n * r), 1.0f, 0.0f);
    b.linear(x, as_mat(b_w, c.n_embd), as_mat(f, r * hd), 1.0f, 0.0f);
    if (rope) b.rope(as_mat(f, r * hd), r, hd, 0, hd, step.positions, c.rope_base);
    // Per token: [n, r] . [r, hd] -> [n, hd].
    b.linear_batched({a.data, act, n, r, r}, n * r, {f.data, act, r, hd, hd}, r * hd, false,
                     {dst.data, act, n, hd, hd}, n * hd, T, 1.0f / float(r), 0.0f);
  };
  combine(a_q_, b_q_, c.q_rank, true, q);
  combine(a_k_, b_k_, c.rank, true, k);
  combine(a_v_, b_v_, c.rank, false, v);
}

void KvAttention::forward(const MatView& x, const StepContext& step, const PagedCacheView& cache,
                          const MatView& out) {
  const ModelConfig& c = config_;
  Backend& b = backend_;
  const int64_t T = x.rows, hd = c.head_dim, n_local = int64_t(plan_.heads.size());
  const int64_t n_kv = int64_t(plan_.kv_heads.size());
  const DType act = b.act_dtype();
  const AttentionKind kind = c.variant.kind;
  const VariantTraits& t = traits(kind);
  Tensor q = b.alloc({T, n_local * hd}, act);
  const MatView q_mat = as_mat(q, n_local * hd);

  PagedAttentionArgs a;
  a.kernel = t.kernel;
  a.q = q.data;
  a.q_dtype = act;
  a.q_token_stride = n_local * hd;
  a.q_head_stride = hd;
  a.num_heads = int32_t(n_local);
  a.cache = cache;
  a.scale = c.softmax_scale();
  const int kv_base = plan_.kv_heads.front();

  if (t.cache == CacheLayout::kTiedRope) {
    // q_h = [a_h | RoPE(b_h)]; cache row [s|u per KV head | RoPE(r)]; K_h = [s|r], V_h = [s|u].
    const int64_t half = hd / 2, width = n_kv * hd + half;
    b.linear(x, as_mat(q_, c.n_embd), q_mat, 1.0f, 0.0f);
    b.rope(q_mat, n_local, hd, half, half, step.positions, c.rope_base);
    Tensor row = b.alloc({T, width}, act);
    const MatView row_mat = as_mat(row, width);
    b.linear(x, as_mat(k_, c.n_embd), row_mat.cols_slice(0, n_kv * hd), 1.0f, 0.0f);
    b.linear(x, as_mat(v_, c.n_embd), row_mat.cols_slice(n_kv * hd, half), 1.0f, 0.0f);
    b.rope(row_mat, 1, width, n_kv * hd, half, step.positions, c.rope_base);
    b.cache_write(row_mat, step.slots, cache, 0);
    a.a_dim = int32_t(half);
    a.r_dim = int32_t(half);
    a.v_dim = int32_t(hd);
    a.r_offset = int32_t(n_kv * hd);
    for (int h : plan_.heads) {
      const int kv = kv_head_of(c, h) - kv_base;
      a.a_offset.push_back(int32_t(kv * hd));
      a.v_offset.push_back(int32_t(kv * hd));
    }
  } else {
    Tensor k = b.alloc({T, n_kv * hd}, act), v = b.alloc({T, n_kv * hd}, act);
    if (kind == AttentionKind::kTpa) {
      project_tpa(x, step, q, k, v);
    } else {
      if (kind == AttentionKind::kMfa) {
        Tensor cq_raw = b.alloc({T, c.share_q_dim}, act), cq = b.alloc({T, c.share_q_dim}, act);
        b.linear(x, as_mat(mfa_cq_, c.n_embd), as_mat(cq_raw, c.share_q_dim), 1.0f, 0.0f);
        b.rms_norm(as_mat(cq_raw, c.share_q_dim), mfa_norm_, c.norm_eps, 1.0f,
                   as_mat(cq, c.share_q_dim));
        b.linear(as_mat(cq, c.share_q_dim), as_mat(q_, c.share_q_dim), q_mat, 1.0f, 0.0f);
      } else {
        b.linear(x, as_mat(q_, c.n_embd), q_mat, 1.0f, 0.0f);
      }
      b.linear(x, as_mat(k_, c.n_embd), as_mat(k, n_kv * hd), 1.0f, 0.0f);
      b.linear(x, as_mat(v_, c.n_embd), as_mat(v, n_kv * hd), 1.0f, 0.0f);
      b.rope(q_mat, n_local, hd, 0, hd, step.positions, c.rope_base);
      b.rope(as_mat(k, n_kv * hd), n_kv, hd, 0, hd, step.positions, c.rope_base);
    }
    b.cache_write(as_mat(k, n_kv * hd), step.slots, cache, 0);
    b.cache_write(as_mat(v, n_kv * hd), step.slots, cache, int32_t(n_kv * hd));
    a.a_dim = int32_t(hd);
    a.v_dim = int32_t(hd);
    for (int h : plan_.heads) {
      const int kv = kv_head_of(c, h) - kv_base;
      a.a_offset.push_back(int32_t(kv * hd));
      a.v_offset.push_back(int32_t((n_kv + kv) * hd));
    }
  }
  bind_step(a, step);
  Tensor o = b.alloc({T, n_local * hd}, act);
  a.out = o.data;
  a.out_dtype = act;
  a.out_token_stride = n_local * hd;
  a.out_head_stride = hd;
  b.paged_attention(a);
  const MatView o_mat = as_mat(o, n_local * hd);
  if (c.variant.gated) {
    Tensor g = b.alloc({T, n_local * hd}, DType::kF32);  // f32 gate: one bf16 rounding fewer
    b.linear(x, as_mat(gate_, c.n_embd), as_mat(g, n_local * hd), 1.0f, 0.0f);
    b.sigmoid_mul(as_mat(g, n_local * hd), o_mat);
  }
  b.linear(o_mat, as_mat(c_proj_, n_local * hd), out, 1.0f, 0.0f);
}

}  // namespace mlra
