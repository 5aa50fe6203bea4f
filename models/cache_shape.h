// Per-GPU KV-cache width under tensor parallelism (models/VARIANTS.md 6.1/6.2): how many cached
// values per token per layer each rank stores, and in how many bytes for either cache encoding
// (kv_cache_dtype). Pure functions of the config, shared by `inspect` and the TP runtime, which
// sizes each rank's cache pages with them.
// Invariant: a TP degree a variant cannot take is refused with a reason, never rounded.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "kernels/paged_attention.h"
#include "models/model_config.h"
#include "models/shard_plan.h"

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

// The server config's kv_cache_dtype: "auto" (the backend's own cache dtype: float32 on the CPU
// backend, bf16 on CUDA) is kPlain, "fp8_e4m3" is kFp8E4M3; nullopt for anything else.
std::optional<CacheEncoding> parse_kv_cache_dtype(const std::string& name);
const char* kv_cache_dtype_name(CacheEncoding encoding);

// The FP8 layout (kernels/fp8_e4m3.h) of a rank's cache row. Latent family: one group per local
// latent (TPLA: per local slice) of plan.latent_width values, k_pe the bf16 tail. K/V family: one
// group per cached K head and per V head (head_dim values each), no tail; GTA: one group per KV
// head's [s | u], its rope key r the tail. values() equals plan.cache_width.
Fp8CacheLayout fp8_cache_layout(const ModelConfig& config, const ShardPlan& plan);

// Bytes of one token's cache row per layer on a rank: cache_width * plain_value_bytes for a plain
// cache, the FP8 layout's row bytes for an FP8 one.
int64_t cache_row_bytes(const ModelConfig& config, const ShardPlan& plan, CacheEncoding encoding,
                        int64_t plain_value_bytes);
// Min and max of cache_row_bytes over the ranks of `tp` (throws ConfigError like the above).
CacheWidth cache_row_bytes_per_rank(const ModelConfig& config, int tp, CacheEncoding encoding,
                                    int64_t plain_value_bytes);

}  // namespace mlra
