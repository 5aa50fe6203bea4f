// Typed model configuration: the GPTConfig fields of a release config.json plus the variant our
// server config names. A missing or inconsistent field is an error naming the field: the
// reference code's class defaults (n_head 13, group_size 11) are invalid for the real models.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>

#include <nlohmann/json_fwd.hpp>

#include "models/variant.h"

namespace mlra {

struct ConfigError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// How an MLA checkpoint is split across TP ranks (serving option, not in config.json).
enum class LatentTpMode { kReplicate, kTpla };

// "replicate" / "tpla"; nullopt for anything else.
std::optional<LatentTpMode> parse_latent_tp_mode(const std::string& name);
const char* latent_tp_mode_name(LatentTpMode mode);

struct TplaOptions {
  // "identity" (plain slicing), "hadamard" (random-sign, data-free, power-of-two widths),
  // "random" (Haar-random rotation, data-free, any width) or the path of a PCA
  // transform file written by `mlra-serve tpla-calibrate`.
  std::string transform = "hadamard";
  bool pd_separation = true;  // prefill runs exact MLA, decode runs TPLA on the same cache
  uint64_t seed = 0x5eed;     // Hadamard sign seed
  int slices = 0;             // latent slices; 0 = the TP degree

  bool operator==(const TplaOptions&) const = default;
};

// How the prefill chunks of MLA / GLA models attend (serving option, not in config.json).
//   kAbsorbed: like decode, queries absorbed into the latent space (d_c + d_r wide keys, d_c wide
//     values per head).
//   kExpanded: each head's K_nope and V up-projected from the cached latents for the step (d_n +
//     d_r wide keys, d_n wide values): 3.4x fewer attention FLOPs for MLA's 32K prefill.
//   kAuto: expanded for the sequences where the FLOPs saved exceed the up-projection's.
enum class LatentPrefill { kAuto, kAbsorbed, kExpanded };

struct LatentPrefillOptions {
  LatentPrefill mode = LatentPrefill::kAuto;
  // Scratch memory of one step's expanded sequences per rank (their up-projected K/V and gathered
  // latents): sequences past it stay absorbed. Part of the activation reserve.
  int64_t scratch_bytes = int64_t(512) << 20;

  bool operator==(const LatentPrefillOptions&) const = default;
};

// "auto" / "absorbed" / "expanded"; nullopt for anything else.
std::optional<LatentPrefill> parse_latent_prefill(const std::string& name);
const char* latent_prefill_name(LatentPrefill mode);

struct ModelConfig {
  Variant variant;
  LatentTpMode mla_tp_mode = LatentTpMode::kReplicate;  // only for MLA checkpoints
  TplaOptions tpla_options;
  LatentPrefillOptions latent_prefill;
  int64_t n_layer = 0;
  int64_t n_head = 0;
  int64_t n_embd = 0;
  int64_t intermediate_size = 0;
  int64_t vocab_size = 0;
  int64_t block_size = 0;
  // MHA family (head_dim: 128; MFA 256)
  int64_t head_dim = 0;
  int64_t group_size = 0;   // GQA/GTA: query heads per KV head; MQA: n_head
  int64_t share_q_dim = 0;  // MFA
  int64_t rank = 0;         // TPA K/V rank
  int64_t q_rank = 0;       // TPA query rank
  // Latent family
  int64_t q_lora_rank = 0;
  int64_t kv_lora_rank = 0;
  int64_t qk_nope_head_dim = 0;
  int64_t qk_rope_head_dim = 0;

  float norm_eps = 1e-6f;
  float rope_base = 10000.0f;
  int64_t eot_token = 50256;
  int64_t text_vocab_size = 50257;  // rows >= this are padding and never sampled

  // Derived quantities (models/VARIANTS.md 2.4 and 5.6).
  int64_t num_kv_heads() const;            // MHA-family KV heads (GQA 6, MQA 1, MHA n_head)
  int64_t num_latents() const;             // 1 MLA, 2 GLA-2, 4 GLA-4/MLRA
  int64_t latent_dim() const;              // d_c = kv_lora_rank / num_latents
  int64_t q_head_dim() const;              // latent family: d_n + d_r
  float q_scale() const;                   // sqrt(d / r_q), 1 for no_scale
  float kv_scale() const;                  // sqrt(d / d_c), 1 for no_scale
  float attn_output_scale() const;         // MLRA-2 1/sqrt2, MLRA-4 1/2, else 1
  float softmax_scale() const;             // FA3 default of the reference forward
  int64_t cache_values_per_token() const;  // per layer at TP=1 (models/VARIANTS.md 5.6)
  bool tpla() const {
    return mla_tp_mode == LatentTpMode::kTpla && variant.kind == AttentionKind::kMla;
  }
  int64_t param_count() const;  // tied embedding counted once

  void validate() const;  // throws ConfigError naming the offending field
};

// Reads config.json (GPTConfig fields) for the given variant and validates it.
ModelConfig parse_model_config(const nlohmann::json& j, const Variant& variant);
ModelConfig load_model_config(const std::filesystem::path& config_json, const Variant& variant);
nlohmann::json to_json(const ModelConfig& c);  // the GPTConfig fields, as config.json holds them

}  // namespace mlra
