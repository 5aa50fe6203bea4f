// Per-variant parameter names and shapes, transcribed from models/VARIANTS.md section 4.
#include "models/tensor_layout.h"

namespace mlra {
namespace {

using Specs = std::vector<TensorSpec>;

void latent_q_path(const ModelConfig& c, Specs& s) {
  const int64_t d = c.n_embd, h = c.n_head;
  s.push_back({"attn.q_a_proj.weight", {c.q_lora_rank, d}});
  s.push_back({"attn.q_a_layernorm.weight", {c.q_lora_rank}});
  s.push_back({"attn.q_b_proj.weight", {h * c.q_head_dim(), c.q_lora_rank}});
  s.push_back({"attn.kv_a_proj_with_mqa.weight", {c.kv_lora_rank + c.qk_rope_head_dim, d}});
}

}  // namespace

std::string layer_prefix(int64_t layer) {
  return "transformer.h." + std::to_string(layer) + ".";
}

std::vector<TensorSpec> attention_tensors(const ModelConfig& c) {
  const int64_t d = c.n_embd, h = c.n_head, hd = c.head_dim;
  Specs s;
  // Gate: first attention key, after the bare kv_b_proj of mlra*_gated (models/VARIANTS.md 4.11).
  auto gate = [&](const char* name) {
    if (c.variant.gated) s.push_back({name, {d, d}});
  };
  switch (c.variant.kind) {
    case AttentionKind::kMha:
    case AttentionKind::kGqa:
    case AttentionKind::kMqa: {
      gate("attn.c_gated.weight");
      const int64_t kv = c.num_kv_heads();
      s.push_back({"attn.c_q.weight", {h * hd, d}});
      s.push_back({"attn.c_k.weight", {kv * hd, d}});
      s.push_back({"attn.c_v.weight", {kv * hd, d}});
      s.push_back({"attn.c_proj.weight", {d, h * hd}});
      break;
    }
    case AttentionKind::kGta:
      s.push_back({"attn.c_q.weight", {h * hd, d}});
      s.push_back({"attn.kv_proj.weight", {c.num_kv_heads() * hd, d}});
      s.push_back({"attn.W_rope_k.weight", {hd / 2, d}});
      s.push_back({"attn.c_proj.weight", {d, h * hd}});
      break;
    case AttentionKind::kMfa:
      s.push_back({"attn.c_q.weight", {c.share_q_dim, d}});
      s.push_back({"attn.q_layernorm.weight", {c.share_q_dim}});
      s.push_back({"attn.w_q.weight", {h * hd, c.share_q_dim}});
      s.push_back({"attn.c_k.weight", {hd, d}});
      s.push_back({"attn.c_v.weight", {hd, d}});
      s.push_back({"attn.c_proj.weight", {d, h * hd}});
      break;
    case AttentionKind::kTpa:
      s.push_back({"attn.c_qkv.W_A_q.weight", {h * c.q_rank, d}});
      s.push_back({"attn.c_qkv.W_A_k.weight", {h * c.rank, d}});
      s.push_back({"attn.c_qkv.W_A_v.weight", {h * c.rank, d}});
      s.push_back({"attn.c_qkv.W_B_q.weight", {c.q_rank * hd, d}});
      s.push_back({"attn.c_qkv.W_B_k.weight", {c.rank * hd, d}});
      s.push_back({"attn.c_qkv.W_B_v.weight", {c.rank * hd, d}});
      s.push_back({"attn.c_proj.weight", {d, h * hd}});
      break;
    case AttentionKind::kMla:
      gate("attn.gated_proj.weight");
      latent_q_path(c, s);
      s.push_back({"attn.kv_a_layernorm.weight", {c.kv_lora_rank}});
      s.push_back({"attn.kv_b_proj.weight", {h * 2 * c.qk_nope_head_dim, c.kv_lora_rank}});
      s.push_back({"attn.c_proj.weight", {d, h * c.qk_nope_head_dim}});
      break;
    case AttentionKind::kGla2: {
      gate("attn.gated_proj.weight");
      latent_q_path(c, s);
      const int64_t dc = c.latent_dim(), half = h / 2 * 2 * c.qk_nope_head_dim;
      s.push_back({"attn.kv_a_layernorm_1.weight", {dc}});
      s.push_back({"attn.kv_a_layernorm_2.weight", {dc}});
      s.push_back({"attn.kv_b_proj_1.weight", {half, dc}});
      s.push_back({"attn.kv_b_proj_2.weight", {half, dc}});
      s.push_back({"attn.c_proj.weight", {d, h * c.qk_nope_head_dim}});
      break;
    }
    case AttentionKind::kGla4:
    case AttentionKind::kMlra2:
    case AttentionKind::kMlra4: {
      const int64_t heads_per_latent = c.variant.kind == AttentionKind::kGla4    ? h / 4
                                       : c.variant.kind == AttentionKind::kMlra2 ? h / 2
                                                                                 : h;
      // Bare parameter, input-major [latent, d_c, out] (flag F3); first in state_dict order.
      s.push_back(
          {"attn.kv_b_proj", {4, c.latent_dim(), heads_per_latent * 2 * c.qk_nope_head_dim}});
      gate("attn.gated_proj.weight");
      latent_q_path(c, s);
      for (int l = 0; l < 4; ++l)
        s.push_back({"attn.kv_a_layernorms." + std::to_string(l) + ".weight", {c.latent_dim()}});
      s.push_back({"attn.c_proj.weight", {d, h * c.qk_nope_head_dim}});
      break;
    }
  }
  return s;
}

std::vector<TensorSpec> expected_tensors(const ModelConfig& c) {
  const int64_t d = c.n_embd, ff = c.intermediate_size;
  Specs s;
  s.push_back({"transformer.wte.weight", {c.vocab_size, d}});
  const Specs attn = attention_tensors(c);
  for (int64_t i = 0; i < c.n_layer; ++i) {
    const std::string p = layer_prefix(i);
    for (const auto& t : attn) s.push_back({p + t.name, t.shape});
    s.push_back({p + "mlp.c_fc1.weight", {ff, d}});
    s.push_back({p + "mlp.c_fc2.weight", {ff, d}});
    s.push_back({p + "mlp.c_proj.weight", {d, ff}});
    s.push_back({p + "input_layernorm.weight", {d}});
    s.push_back({p + "post_attention_layernorm.weight", {d}});
  }
  s.push_back({"layernorm.weight", {d}});
  s.push_back({"lm_head.weight", {c.vocab_size, d}});
  return s;
}

}  // namespace mlra
