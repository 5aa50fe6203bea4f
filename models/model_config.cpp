// config.json parsing, validation and the derived constants of models/VARIANTS.md 2.4.
#include "models/model_config.h"

#include <cmath>
#include <fstream>

#include <nlohmann/json.hpp>

#include "models/tensor_layout.h"
#include "models/variant_traits.h"

namespace mlra {
namespace {

int64_t required_int(const nlohmann::json& j, const char* key, const std::string& variant) {
  if (!j.contains(key))
    throw ConfigError("config.json: missing field '" + std::string(key) + "' required by variant " +
                      variant);
  const auto& v = j.at(key);
  if (!v.is_number_integer())
    throw ConfigError("config.json: field '" + std::string(key) + "' must be an integer");
  return v.get<int64_t>();
}

void require(bool ok, const std::string& what) {
  if (!ok) throw ConfigError("model config: " + what);
}

}  // namespace

std::optional<LatentTpMode> parse_latent_tp_mode(const std::string& name) {
  if (name == "replicate") return LatentTpMode::kReplicate;
  if (name == "tpla") return LatentTpMode::kTpla;
  return std::nullopt;
}

const char* latent_tp_mode_name(LatentTpMode mode) {
  return mode == LatentTpMode::kTpla ? "tpla" : "replicate";
}

std::optional<LatentPrefill> parse_latent_prefill(const std::string& name) {
  if (name == "auto") return LatentPrefill::kAuto;
  if (name == "absorbed") return LatentPrefill::kAbsorbed;
  if (name == "expanded") return LatentPrefill::kExpanded;
  return std::nullopt;
}

const char* latent_prefill_name(LatentPrefill mode) {
  switch (mode) {
    case LatentPrefill::kAbsorbed:
      return "absorbed";
    case LatentPrefill::kExpanded:
      return "expanded";
    default:
      return "auto";
  }
}

int64_t ModelConfig::num_kv_heads() const {
  switch (traits(variant.kind).kv_heads) {
    case KvHeadMap::kPerHead:
      return n_head;
    case KvHeadMap::kGrouped:
      return group_size > 0 ? n_head / group_size : 0;
    case KvHeadMap::kShared:
      return 1;
    default:
      return 0;
  }
}

// GLA-4 and MLRA's 4 are hard-coded in the reference (flag F10).
int64_t ModelConfig::num_latents() const {
  return traits(variant.kind).num_latents;
}

int64_t ModelConfig::latent_dim() const {
  return num_latents() ? kv_lora_rank / num_latents() : 0;
}
int64_t ModelConfig::q_head_dim() const {
  return qk_nope_head_dim + qk_rope_head_dim;
}

float ModelConfig::q_scale() const {
  if (!variant.is_latent() || variant.no_scale) return 1.0f;
  return static_cast<float>(std::sqrt(double(n_embd) / double(q_lora_rank)));
}
float ModelConfig::kv_scale() const {
  if (!variant.is_latent() || variant.no_scale) return 1.0f;
  return static_cast<float>(std::sqrt(double(n_embd) / double(latent_dim())));
}
float ModelConfig::attn_output_scale() const {
  if (variant.kind == AttentionKind::kMlra2)
    return variant.no_scale ? 1.0f : float(1 / std::sqrt(2.0));
  if (variant.kind == AttentionKind::kMlra4) return 0.5f;
  return 1.0f;
}
float ModelConfig::softmax_scale() const {
  if (variant.is_latent()) return float(1.0 / std::sqrt(double(q_head_dim())));
  return float(1.0 / std::sqrt(double(head_dim)));
}

int64_t ModelConfig::cache_values_per_token() const {
  switch (traits(variant.kind).cache) {
    case CacheLayout::kKvHeads:
      return 2 * head_dim * num_kv_heads();
    case CacheLayout::kTiedRope:
      return head_dim * num_kv_heads() + head_dim / 2;
    default:
      return kv_lora_rank + qk_rope_head_dim;
  }
}

int64_t ModelConfig::param_count() const {
  int64_t n = 0;
  for (const auto& t : expected_tensors(*this))
    if (t.name != "lm_head.weight") n += t.numel();
  return n;
}

void ModelConfig::validate() const {
  // Upper bounds far above any real model keep every product of dimensions (tensor sizes,
  // parameter counts) inside int64 and a hostile config.json from sizing huge tables.
  const struct {
    const char* name;
    int64_t value, max;
  } kBounds[] = {{"n_layer", n_layer, 1 << 10},
                 {"n_head", n_head, 1 << 10},
                 {"n_embd", n_embd, 1 << 16},
                 {"intermediate_size", intermediate_size, 1 << 20},
                 {"vocab_size", vocab_size, 1 << 22},
                 {"block_size", block_size, 1 << 24},
                 {"head_dim", head_dim, 1 << 12},
                 {"group_size", group_size, 1 << 10},
                 {"share_q_dim", share_q_dim, 1 << 16},
                 {"rank", rank, 1 << 12},
                 {"q_rank", q_rank, 1 << 12},
                 {"q_lora_rank", q_lora_rank, 1 << 16},
                 {"kv_lora_rank", kv_lora_rank, 1 << 16},
                 {"qk_nope_head_dim", qk_nope_head_dim, 1 << 12},
                 {"qk_rope_head_dim", qk_rope_head_dim, 1 << 12}};
  for (const auto& b : kBounds)
    require(b.value >= 0 && b.value <= b.max, std::string(b.name) + " " + std::to_string(b.value) +
                                                  " outside [0, " + std::to_string(b.max) + "]");
  require(n_layer > 0, "n_layer must be positive");
  require(n_head > 0, "n_head must be positive");
  require(n_embd > 0, "n_embd must be positive");
  require(intermediate_size > 0, "intermediate_size must be positive");
  require(vocab_size > 0, "vocab_size must be positive");
  require(text_vocab_size <= vocab_size, "vocab_size smaller than the tokenizer's 50257");
  const std::string v = variant.name();
  if (variant.is_latent()) {
    require(qk_rope_head_dim > 0 && qk_rope_head_dim % 2 == 0,
            "qk_rope_head_dim must be positive and even");
    require(qk_nope_head_dim > 0, "qk_nope_head_dim must be positive");
    require(q_lora_rank > 0, "q_lora_rank must be positive");
    require(kv_lora_rank % num_latents() == 0,
            "kv_lora_rank " + std::to_string(kv_lora_rank) + " not divisible by the " +
                std::to_string(num_latents()) + " latents of " + v);
    require(n_embd == n_head * qk_nope_head_dim,
            "n_embd must equal n_head * qk_nope_head_dim (c_proj is [n_embd, n_head*d_v])");
    if (variant.kind == AttentionKind::kGla2 || variant.kind == AttentionKind::kMlra2)
      require(n_head % 2 == 0, "n_head must be even for " + v);
    if (variant.kind == AttentionKind::kGla4)
      require(n_head % 4 == 0, "n_head must be divisible by 4 for gla4");
    if (variant.kind == AttentionKind::kGla4 || variant.kind == AttentionKind::kMlra2 ||
        variant.kind == AttentionKind::kMlra4)
      require(latent_dim() == qk_nope_head_dim,
              "latent width kv_lora_rank/4 must equal qk_nope_head_dim for " + v);
  } else {
    require(head_dim > 0 && head_dim % 2 == 0, "head_dim must be positive and even");
    if (variant.kind == AttentionKind::kGqa || variant.kind == AttentionKind::kGta) {
      require(group_size > 0 && n_head % group_size == 0,
              "group_size " + std::to_string(group_size) + " does not divide n_head " +
                  std::to_string(n_head));
    }
    if (variant.kind == AttentionKind::kMqa)
      require(group_size == n_head, "mqa needs group_size == n_head");
    if (variant.kind == AttentionKind::kMfa)
      require(share_q_dim > 0, "share_q_dim must be positive");
    if (variant.kind == AttentionKind::kTpa)
      require(rank > 0 && q_rank > 0, "rank/q_rank must be positive");
    if (variant.kind == AttentionKind::kMha || variant.kind == AttentionKind::kGqa ||
        variant.kind == AttentionKind::kMqa || variant.kind == AttentionKind::kGta ||
        variant.kind == AttentionKind::kTpa)
      require(n_embd == n_head * head_dim, "n_embd must equal n_head * head_dim for " + v);
  }
}

ModelConfig parse_model_config(const nlohmann::json& j, const Variant& variant) {
  if (!j.is_object()) throw ConfigError("config.json: top level is not an object");
  const std::string v = variant.name();
  ModelConfig c;
  c.variant = variant;
  c.n_layer = required_int(j, "n_layer", v);
  c.n_head = required_int(j, "n_head", v);
  c.n_embd = required_int(j, "n_embd", v);
  c.intermediate_size = required_int(j, "intermediate_size", v);
  c.vocab_size = required_int(j, "vocab_size", v);
  c.block_size = j.contains("block_size") ? required_int(j, "block_size", v) : 0;
  if (j.contains("bias") && j.at("bias").is_boolean() && j.at("bias").get<bool>())
    throw ConfigError("config.json: bias=true is not supported (the release has no biases)");
  if (c.vocab_size < c.text_vocab_size) c.text_vocab_size = c.vocab_size;
  switch (variant.kind) {
    case AttentionKind::kMha:
      c.head_dim = required_int(j, "head_dim", v);
      break;
    case AttentionKind::kGqa:
    case AttentionKind::kMqa:
    case AttentionKind::kGta:
      c.head_dim = required_int(j, "head_dim", v);
      c.group_size = required_int(j, "group_size", v);
      break;
    case AttentionKind::kMfa:
      c.head_dim = required_int(j, "head_dim", v);
      c.share_q_dim = required_int(j, "share_q_dim", v);
      break;
    case AttentionKind::kTpa:
      c.head_dim = required_int(j, "head_dim", v);
      c.rank = required_int(j, "rank", v);
      c.q_rank = required_int(j, "q_rank", v);
      break;
    default:
      c.q_lora_rank = required_int(j, "q_lora_rank", v);
      c.kv_lora_rank = required_int(j, "kv_lora_rank", v);
      c.qk_nope_head_dim = required_int(j, "qk_nope_head_dim", v);
      c.qk_rope_head_dim = required_int(j, "qk_rope_head_dim", v);
  }
  c.validate();
  return c;
}

ModelConfig load_model_config(const std::filesystem::path& path, const Variant& variant) {
  std::error_code ec;
  const auto type = std::filesystem::status(path, ec).type();
  if (type != std::filesystem::file_type::regular && type != std::filesystem::file_type::not_found)
    throw ConfigError(path.string() + ": not a regular file");
  std::ifstream in(path);
  if (!in) throw ConfigError("cannot open " + path.string());
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw ConfigError(path.string() + ": invalid JSON: " + e.what());
  }
  try {
    return parse_model_config(j, variant);
  } catch (const ConfigError& e) {
    throw ConfigError(path.string() + ": " + e.what());
  }
}

nlohmann::json to_json(const ModelConfig& c) {
  nlohmann::json j = {{"n_layer", c.n_layer},
                      {"n_head", c.n_head},
                      {"n_embd", c.n_embd},
                      {"intermediate_size", c.intermediate_size},
                      {"vocab_size", c.vocab_size},
                      {"block_size", c.block_size},
                      {"bias", false},
                      {"dropout", 0.0},
                      {"model_type", "gpt2"},
                      {"architectures", {"GPT"}}};
  if (c.variant.is_latent()) {
    j["q_lora_rank"] = c.q_lora_rank;
    j["kv_lora_rank"] = c.kv_lora_rank;
    j["qk_nope_head_dim"] = c.qk_nope_head_dim;
    j["qk_rope_head_dim"] = c.qk_rope_head_dim;
  } else {
    j["head_dim"] = c.head_dim;
    if (c.group_size) j["group_size"] = c.group_size;
    if (c.share_q_dim) j["share_q_dim"] = c.share_q_dim;
    if (c.rank) j["rank"] = c.rank;
    if (c.q_rank) j["q_rank"] = c.q_rank;
  }
  return j;
}

}  // namespace mlra
