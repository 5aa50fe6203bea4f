// Per-rank decode products of every variant family; mirrors transformer.cpp, kv_attention.cpp and
// latent_attention.cpp (decode steps: absorbed latent form, no expanded or exact prefill).
#include "models/decode_products.h"

#include "models/variant_traits.h"

namespace mlra {
namespace {

void add(std::vector<DecodeProduct>& out, const DecodeProduct& p) {
  for (const DecodeProduct& q : out)
    if (q.name == p.name && q.n == p.n && q.k == p.k && q.batch == p.batch &&
        q.out_by_in == p.out_by_in)
      return;
  out.push_back(p);
}

DecodeProduct linear(const std::string& name, int64_t n, int64_t k, bool y_f32 = false) {
  DecodeProduct p;
  p.name = name, p.n = n, p.k = k, p.y_f32 = y_f32;
  return p;
}

DecodeProduct batched(const std::string& name, int64_t n, int64_t k, int64_t batch, bool x_shared) {
  DecodeProduct p = linear(name, n, k);
  p.batch = batch, p.x_shared = x_shared;
  return p;
}

void latent_products(const ModelConfig& c, const ShardPlan& plan, bool uk_t,
                     std::vector<DecodeProduct>& out) {
  const int64_t d = c.n_embd, dn = c.qk_nope_head_dim, dr = c.qk_rope_head_dim, dc = c.latent_dim();
  const int64_t n_local = int64_t(plan.heads.size()), n_lat = int64_t(plan.latents.size());
  const int64_t width = plan.latent_width, r_q = c.q_lora_rank;
  add(out, linear("x_proj", r_q + (c.tpla() ? dc : n_lat * dc + dr), d));
  add(out, linear("q_b_nope", n_local * dn, r_q));
  if (c.tpla()) {
    add(out, linear("kv_rope", dr, d));
    add(out, linear("slice_proj", n_lat * width, dc));
  }
  for (const LatentUnit& u : plan.units) {
    if (uk_t) {
      add(out, batched("w_uk_t", width, dn, u.num_heads(), false));
    } else {
      DecodeProduct uk = batched("w_uk", width, dn, u.num_heads(), false);
      uk.out_by_in = false;
      add(out, uk);
    }
    add(out, batched("q_b_rope", dr, r_q, u.num_heads(), true));
    add(out, batched("w_uv", dn, width, u.num_heads(), false));
  }
  if (c.variant.gated) add(out, linear("gate", n_local * dn, d, true));
  add(out, linear("c_proj", d, n_local * dn));
}

void kv_products(const ModelConfig& c, const ShardPlan& plan, std::vector<DecodeProduct>& out) {
  const int64_t d = c.n_embd, hd = c.head_dim, n_local = int64_t(plan.heads.size());
  const int64_t n_kv = int64_t(plan.kv_heads.size());
  switch (c.variant.kind) {
    case AttentionKind::kGta:
      add(out, linear("q", n_local * hd, d));
      add(out, linear("k", n_kv * hd, d));
      add(out, linear("v_rope", hd / 2, d));
      break;
    case AttentionKind::kMfa:
      add(out, linear("cq", c.share_q_dim, d));
      add(out, linear("q", n_local * hd, c.share_q_dim));
      add(out, linear("k", hd, d));
      add(out, linear("v", hd, d));
      break;
    case AttentionKind::kTpa:
      add(out, linear("a_q", n_local * c.q_rank, d));
      add(out, linear("b_q", c.q_rank * hd, d));
      add(out, linear("a_kv", n_local * c.rank, d));
      add(out, linear("b_kv", c.rank * hd, d));
      break;
    default:
      add(out, linear("q", n_local * hd, d));
      add(out, linear("k", n_kv * hd, d));
      add(out, linear("v", n_kv * hd, d));
      break;
  }
  if (c.variant.gated) add(out, linear("gate", n_local * hd, d, true));
  add(out, linear("c_proj", d, n_local * hd));
}

}  // namespace

std::vector<DecodeProduct> decode_products(const ModelConfig& c, const ShardPlan& plan,
                                           const KernelOptions& options) {
  std::vector<DecodeProduct> out;
  if (c.variant.is_latent())
    latent_products(c, plan, options.latent_uk_t != 0, out);
  else
    kv_products(c, plan, out);
  const int64_t ff = plan.ff_end - plan.ff_begin;
  DecodeProduct fc12 = linear("fc12", ff, c.n_embd);
  fc12.glu = true;
  add(out, fc12);
  add(out, linear("mlp_proj", c.n_embd, ff));
  if (plan.rank == 0) add(out, linear("lm_head", c.vocab_size, c.n_embd, true));
  return out;
}

}  // namespace mlra
