// Tensor-parallel sharding plans as pure functions (models/VARIANTS.md section 6): for a variant, a
// TP degree and a rank, which query heads, KV heads, latent heads and MLP rows the rank owns. Every
// rank's partial attention and MLP outputs sum (all-reduce) to the TP=1 result.
//
// Latent family: the model is a list of "units" (latent l, the query heads reading it). Units
// are dealt out contiguously when tp <= #units; when tp > #units each unit's heads are split
// into tp / #units blocks. That single rule yields MLA (latent replicated, heads split),
// GLA-2/GLA-4 (latent + head split) and MLRA-4 TP4 (rank r <-> latent head r, all heads).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "models/model_config.h"

namespace mlra {

struct LatentUnit {
  int latent = 0;
  int head_begin = 0;  // global query heads [head_begin, head_end) read this latent
  int head_end = 0;
  int num_heads() const { return head_end - head_begin; }
};

struct ShardPlan {
  int tp = 1;
  int rank = 0;
  std::vector<int> heads;         // local query heads (global ids, ascending)
  std::vector<LatentUnit> units;  // latent family: this rank's units, in compute order
  std::vector<int> latents;       // latent family: local latent heads, ascending (cache order)
  int64_t latent_width = 0;       // width of one cached latent (d_c; d_c / slices under TPLA)
  std::vector<int> kv_heads;      // MHA family: local KV heads (global ids, ascending)
  int64_t ff_begin = 0;           // MLP rows [ff_begin, ff_end) of c_fc1/c_fc2, cols of c_proj
  int64_t ff_end = 0;
  int64_t cache_width = 0;  // cache values per token per layer on this rank

  int local_head(int global_head) const;  // index into heads, -1 if absent
  int local_latent(int latent) const;     // index into latents, -1 if absent
  int local_kv_head(int kv_head) const;   // index into kv_heads, -1 if absent
};

struct ShardError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// TPLA (MLA with mla_tp_mode tpla): the latent is cut into `slices` slices (default: the TP
// degree), each a unit read by every head with its own softmax; rank r caches slice r only.
//
// All units of a latent-family model at TP=1, in the order ranks take them.
std::vector<LatentUnit> latent_units(const ModelConfig& config, int tp = 1);
// K/V family: the KV head query head `query_head` reads (variant_traits.h: KvHeadMap).
int kv_head_of(const ModelConfig& config, int query_head);
// Throws ShardError with the reason when the variant cannot be split tp ways.
ShardPlan make_shard_plan(const ModelConfig& config, int tp, int rank);
// Empty when `tp` is supported, else the reason.
std::string unsupported_tp_reason(const ModelConfig& config, int tp);
// The attention part of that check only (heads / latent units).
std::string attention_tp_reason(const ModelConfig& config, int tp);

}  // namespace mlra
