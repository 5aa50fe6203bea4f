// Range checks of KernelOptions; see kernel_options.h.
#include "kernels/kernel_options.h"

namespace mlra {

std::string kernel_options_error(const KernelOptions& o) {
  if (o.gemv_max_rows < 0 || o.gemv_max_rows > KernelOptions::kMaxGemvRows)
    return "gemv_max_rows must be in 0.." + std::to_string(KernelOptions::kMaxGemvRows);
  if (o.kv_split_per_sm < 0 || o.kv_split_per_sm > KernelOptions::kMaxKvSplitPerSm)
    return "kv_split_per_sm must be in 0.." + std::to_string(KernelOptions::kMaxKvSplitPerSm) +
           " (0: automatic)";
  if (o.latent_fused_max_tokens < 0 || o.latent_fused_max_tokens > KernelOptions::kMaxLatentTokens)
    return "latent_fused_max_tokens must be in 0.." +
           std::to_string(KernelOptions::kMaxLatentTokens) + " (0: never fused)";
  if (o.latent_fused_min_units < 1 || o.latent_fused_min_units > KernelOptions::kMaxLatentUnits)
    return "latent_fused_min_units must be in 1.." + std::to_string(KernelOptions::kMaxLatentUnits);
  if (o.latent_fused_tiled < 0 || o.latent_fused_tiled > 1)
    return "latent_fused_tiled must be 0 or 1";
  if (o.weight_prefetch_l2 < 0 || o.weight_prefetch_l2 > 1)
    return "weight_prefetch_l2 must be 0 or 1";
  if (o.gemv_fused_norm < 0 || o.gemv_fused_norm > 3)
    return "gemv_fused_norm must be in 0..3 (bits: 1 linear_normed, 2 linear_swiglu_normed)";
  return "";
}

}  // namespace mlra
