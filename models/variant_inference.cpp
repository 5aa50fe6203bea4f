// Variant inference from layer-0 attention keys. The latent family generalises flag F1: a bare
// kv_b_proj [4, d_c, G*2*d_nope] serves G heads per latent, and G = n_head/4, n_head/2, n_head
// means GLA-4, MLRA-2, MLRA-4 (n_head = c_proj columns / d_nope, d_nope = d_c for these).
#include "models/variant_inference.h"

#include <spdlog/spdlog.h>

namespace mlra {
namespace {

constexpr const char* kAttn = "transformer.h.0.attn.";

const std::vector<int64_t>* shape_of(const Checkpoint& c, const std::string& key) {
  const std::string name = kAttn + key;
  return c.has(name) ? &c.info(name).shape : nullptr;
}

InferredVariant latent_bare(const Checkpoint& c, const std::vector<int64_t>& kvb) {
  const auto* proj = shape_of(c, "c_proj.weight");
  const std::string what = "attn.kv_b_proj " + shape_string(kvb);
  if (kvb.size() != 3 || kvb[0] != 4 || kvb[1] <= 0 || !proj || proj->size() != 2 ||
      (*proj)[1] % kvb[1] != 0 || kvb[2] % (2 * kvb[1]) != 0)
    throw CheckpointError(c.dir().string() + ": " + what +
                          " is not [4, d_c, heads*2*d_c] with a matching attn.c_proj");
  const int64_t n_head = (*proj)[1] / kvb[1], per_latent = kvb[2] / (2 * kvb[1]);
  InferredVariant r;
  const std::string ev =
      what + ": " + std::to_string(per_latent) + " heads per latent of " + std::to_string(n_head);
  if (per_latent * 4 == n_head)
    r.variant.kind = AttentionKind::kGla4, r.evidence = ev + " (n_head/4)";
  else if (per_latent * 2 == n_head)
    r.variant.kind = AttentionKind::kMlra2, r.evidence = ev + " (n_head/2)";
  else if (per_latent == n_head)
    r.variant.kind = AttentionKind::kMlra4, r.evidence = ev + " (n_head)";
  else
    throw CheckpointError(c.dir().string() + ": " + ev + " matches no latent variant");
  return r;
}

}  // namespace

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

InferredVariant infer_variant(const Checkpoint& c, int64_t kv_head_dim) {
  InferredVariant r;
  if (const auto* kvb = shape_of(c, "kv_b_proj")) {
    r = latent_bare(c, *kvb);
  } else if (shape_of(c, "kv_a_layernorm.weight")) {
    r = {{AttentionKind::kMla}, "attn.kv_a_layernorm.weight (one latent)"};
  } else if (shape_of(c, "kv_a_layernorm_1.weight")) {
    r = {{AttentionKind::kGla2}, "attn.kv_a_layernorm_1.weight (two latents)"};
  } else if (shape_of(c, "c_qkv.W_A_q.weight")) {
    r = {{AttentionKind::kTpa}, "attn.c_qkv.* (tensor-product factors)"};
  } else if (shape_of(c, "w_q.weight")) {
    r = {{AttentionKind::kMfa}, "attn.w_q.weight (shared q projection)"};
  } else if (shape_of(c, "kv_proj.weight")) {
    r = {{AttentionKind::kGta}, "attn.kv_proj.weight (tied key/value)"};
  } else if (const auto* k = shape_of(c, "c_k.weight"); k && shape_of(c, "c_q.weight")) {
    const int64_t k_rows = (*k)[0], q_rows = (*shape_of(c, "c_q.weight"))[0];
    const std::string ev = "attn.c_k.weight " + shape_string(*k) + " vs attn.c_q.weight rows " +
                           std::to_string(q_rows);
    if (k_rows == q_rows)
      r = {{AttentionKind::kMha}, ev + " (one KV head per query head)"};
    else if (k_rows == kv_head_dim)
      r = {{AttentionKind::kMqa}, ev + " (one KV head)"};
    else
      r = {{AttentionKind::kGqa}, ev + " (grouped KV heads)"};
  } else {
    throw CheckpointError(c.dir().string() + ": no recognisable attention tensors under " + kAttn);
  }
  if (shape_of(c, "gated_proj.weight") || shape_of(c, "c_gated.weight")) {
    r.variant.gated = true;
    r.evidence += " + gate projection";
  }
  return r;
}

void check_variant(const Checkpoint& c, const ModelConfig& config) {
  const InferredVariant found = infer_variant(c, config.head_dim > 0 ? config.head_dim : 128);
  const Variant& want = config.variant;
  if (found.variant.kind != want.kind || found.variant.gated != want.gated)
    throw CheckpointError(c.dir().string() + ": checkpoint holds " + found.variant.name() +
                          " (found " + found.evidence + ") but the configured attention is " +
                          want.name());
  if (want.no_scale)
    spdlog::info("{}: no_scale cannot be told from the checkpoint; trusting the configured {}",
                 c.dir().string(), want.name());
}

}  // namespace mlra
