// Per-GPU KV-cache width under tensor parallelism (models/VARIANTS.md 6.1/6.2): how many cached
// values per token per layer each rank stores. Pure functions of the config, shared by `inspect`
// and the TP runtime, which sizes each rank's cache pages with them.
// Invariant: a TP degree a variant cannot take is refused with a reason, never rounded.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "models/model_config.h"

namespace mlra {

struct CacheWidth {
  int64_t min_values = 0;  // over ranks (GQA/GTA duplicate straddling KV heads unevenly)
  int64_t max_values = 0;
};

// Cached values per token per layer on rank `rank` of `tp` (latents, k_pe, K/V heads, factors).
// Throws ConfigError when the variant cannot be split over `tp` ranks, saying why.
int64_t cache_values_on_rank(const ModelConfig& config, int tp, int rank);
// Min and max of cache_values_on_rank over all ranks. Throws ConfigError like the above.
CacheWidth cache_values_per_rank(const ModelConfig& config, int tp);
// The reason `tp` is refused, or nullopt when it is supported.
std::optional<std::string> tp_refusal(const ModelConfig& config, int tp);

}  // namespace mlra
