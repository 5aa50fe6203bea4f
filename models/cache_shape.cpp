// Per-rank cache widths, read off the sharding plan (models/shard_plan.h) so `inspect`, the TP
// runtime and the forward can never disagree about what a rank caches.
#include "models/cache_shape.h"

#include <algorithm>

#include "models/shard_plan.h"

namespace mlra {

std::optional<std::string> tp_refusal(const ModelConfig& config, int tp) {
  if (tp < 1) return "TP degree must be at least 1";
  std::string why = attention_tp_reason(config, tp);
  if (why.empty()) return std::nullopt;
  return why;
}

int64_t cache_values_on_rank(const ModelConfig& config, int tp, int rank) {
  if (auto why = tp_refusal(config, tp)) throw ConfigError(*why);
  ModelConfig attention_only = config;  // the MLP split does not change what a rank caches
  attention_only.intermediate_size = tp;
  try {
    return make_shard_plan(attention_only, tp, rank).cache_width;
  } catch (const ShardError& e) {
    throw ConfigError(e.what());
  }
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

}  // namespace mlra
