// Per-rank cache widths, read off the sharding plan (models/shard_plan.h) so `inspect`, the TP
// runtime and the forward can never disagree about what a rank caches.
#include "models/cache_shape.h"

#include <algorithm>
#include <stdexcept>

#include "models/shard_plan.h"

namespace mlra {
namespace {

// The plan of rank `rank` for its attention only: the MLP split does not change what it caches.
ShardPlan attention_plan(const ModelConfig& config, int tp, int rank) {
  if (auto why = tp_refusal(config, tp)) throw ConfigError(*why);
  ModelConfig attention_only = config;
  attention_only.intermediate_size = tp;
  try {
    return make_shard_plan(attention_only, tp, rank);
  } catch (const ShardError& e) {
    throw ConfigError(e.what());
  }
}

}  // namespace

std::optional<std::string> tp_refusal(const ModelConfig& config, int tp) {
  if (tp < 1) return "TP degree must be at least 1";
  std::string why = attention_tp_reason(config, tp);
  if (why.empty()) return std::nullopt;
  return why;
}

int64_t cache_values_on_rank(const ModelConfig& config, int tp, int rank) {
  return attention_plan(config, tp, rank).cache_width;
}

CacheWidth cache_values_per_rank(const ModelConfig& config, int tp) {
  if (auto why = tp_refusal(config, tp)) throw ConfigError(*why);
  CacheWidth w{INT64_MAX, 0};
  for (int r = 0; r < tp; ++r) {
    const int64_t v = cache_values_on_rank(config, tp, r);
    w.min_values = std::min(w.min_values, v);
    w.max_values = std::max(w.max_values, v);
  }
  return w;
}

std::optional<CacheEncoding> parse_kv_cache_dtype(const std::string& name) {
  if (name == "auto") return CacheEncoding::kPlain;
  if (name == "fp8_e4m3") return CacheEncoding::kFp8E4M3;
  return std::nullopt;
}

const char* kv_cache_dtype_name(CacheEncoding encoding) {
  return encoding == CacheEncoding::kFp8E4M3 ? "fp8_e4m3" : "auto";
}

Fp8CacheLayout fp8_cache_layout(const ModelConfig& c, const ShardPlan& plan) {
  Fp8CacheLayout l;
  if (c.variant.is_latent()) {
    l.groups = int32_t(plan.latents.size());
    l.group_width = int32_t(plan.latent_width);
    l.tail = int32_t(c.qk_rope_head_dim);
  } else if (c.variant.kind == AttentionKind::kGta) {
    l.groups = int32_t(plan.kv_heads.size());
    l.group_width = int32_t(c.head_dim);
    l.tail = int32_t(c.head_dim / 2);
  } else {
    l.groups = int32_t(2 * plan.kv_heads.size());
    l.group_width = int32_t(c.head_dim);
  }
  if (l.values() != plan.cache_width)
    throw std::logic_error("fp8 cache layout: groups do not cover the cache row");
  return l;
}

int64_t cache_row_bytes(const ModelConfig& config, const ShardPlan& plan, CacheEncoding encoding,
                        int64_t plain_value_bytes) {
  if (encoding == CacheEncoding::kFp8E4M3) return fp8_cache_layout(config, plan).row_bytes();
  return plan.cache_width * plain_value_bytes;
}

CacheWidth cache_row_bytes_per_rank(const ModelConfig& config, int tp, CacheEncoding encoding,
                                    int64_t plain_value_bytes) {
  if (auto why = tp_refusal(config, tp)) throw ConfigError(*why);
  CacheWidth w{INT64_MAX, 0};
  for (int r = 0; r < tp; ++r) {
    const int64_t b =
        cache_row_bytes(config, attention_plan(config, tp, r), encoding, plain_value_bytes);
    w.min_values = std::min(w.min_values, b);
    w.max_values = std::max(w.max_values, b);
  }
  return w;
}

}  // namespace mlra
