// Cache page counts from byte budgets and GPU memory (header).
#include "engine/cache_budget.h"

#include <algorithm>
#include <stdexcept>

#include "models/latent_expansion.h"

namespace mlra {

int64_t cache_value_bytes(const std::string& backend) {
  return backend == "cuda" ? 2 : 4;
}

int64_t pages_for_budget(int64_t bytes, int64_t bytes_per_token, int32_t page_size) {
  if (bytes_per_token <= 0 || page_size <= 0) return 0;
  return bytes / (bytes_per_token * page_size);
}

int64_t gpu_cache_bytes(const DeviceMemory& m, double fraction, int64_t reserve_bytes,
                        int sharing_ranks) {
  if (sharing_ranks < 1) throw std::invalid_argument("gpu_cache_bytes: sharing_ranks must be >= 1");
  const int64_t used = m.total_bytes - m.free_bytes;  // weights, contexts, other processes
  return (int64_t(fraction * double(m.total_bytes)) - used) / sharing_ranks - reserve_bytes;
}

int64_t activation_reserve_bytes(const ModelConfig& config, int32_t cuda_graph_max_batch) {
  const int64_t graph_logits = int64_t(std::max(cuda_graph_max_batch, 1)) * config.vocab_size * 4;
  const bool expands =
      latent_expansion_supported(config) && config.latent_prefill.mode != LatentPrefill::kAbsorbed;
  return (int64_t(1) << 30) + 3 * graph_logits +
         (expands ? config.latent_prefill.scratch_bytes : 0);
}

int64_t gpu_cache_pages(const DeviceMemory& m, double fraction, int64_t reserve_bytes,
                        int64_t bytes_per_token, int32_t page_size, int sharing_ranks) {
  const int64_t bytes = gpu_cache_bytes(m, fraction, reserve_bytes, sharing_ranks);
  return pages_for_budget(std::max<int64_t>(bytes, 0), bytes_per_token, page_size) - 1;
}

}  // namespace mlra
