// How many cache pages a runner's ranks hold: from a byte budget (cache_memory_bytes) or from what
// a GPU has left after the weights (gpu_memory_fraction). Page ids are shared by all ranks, so
// every count here is one for all of them, sized by the widest rank. Pure functions.
#pragma once

#include <cstdint>
#include <string>

#include "kernels/backend.h"
#include "models/model_config.h"

namespace mlra {

// Bytes of one value of a plain cache (kv_cache_dtype auto): f32 on the CPU backend, bf16 on CUDA.
int64_t cache_value_bytes(const std::string& backend);

// Pages that fit in `bytes` for a rank caching `bytes_per_token` bytes per token.
int64_t pages_for_budget(int64_t bytes, int64_t bytes_per_token, int32_t page_size);

// Cache bytes a GPU can give one rank when the server may use `fraction` of its memory in all:
// what is still free under that cap (weights are already resident), split evenly between the
// `sharing_ranks` ranks on that GPU, minus the rank's reserve for activations, workspaces and
// recorded graphs. Negative when nothing is left. Ranks sharing a GPU measure it once all of them
// hold their weights, so each sees the same `used`.
int64_t gpu_cache_bytes(const DeviceMemory& after_weights, double fraction, int64_t reserve_bytes,
                        int sharing_ranks = 1);
// The reserve: 1 GiB for a step's activations and the attention workspace, room for decode
// graphs' logits buffers, and the expanded latent prefill's scratch (MLA / GLA).
int64_t activation_reserve_bytes(const ModelConfig& config, int32_t cuda_graph_max_batch);
// Pages one rank can hold under that cap (one fewer than fit: the cache keeps a scratch page past
// the shared ones); <= 0 when none.
int64_t gpu_cache_pages(const DeviceMemory& after_weights, double fraction, int64_t reserve_bytes,
                        int64_t bytes_per_token, int32_t page_size, int sharing_ranks = 1);

}  // namespace mlra
