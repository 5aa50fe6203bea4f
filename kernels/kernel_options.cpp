// Range checks of KernelOptions; see kernel_options.h.
#include "kernels/kernel_options.h"

namespace mlra {

std::string kernel_options_error(const KernelOptions& o) {
  if (o.gemv_max_rows < 0 || o.gemv_max_rows > KernelOptions::kMaxGemvRows)
    return "gemv_max_rows must be in 0.." + std::to_string(KernelOptions::kMaxGemvRows);
  if (o.latent_uk_t < 0 || o.latent_uk_t > 1) return "latent_uk_t must be 0 or 1";
  if (o.kv_split_per_sm < 0 || o.kv_split_per_sm > KernelOptions::kMaxKvSplitPerSm)
    return "kv_split_per_sm must be in 0.." + std::to_string(KernelOptions::kMaxKvSplitPerSm) +
           " (0: automatic)";
  if (o.mlp_block < 0 || o.mlp_block > 1) return "mlp_block must be 0 or 1";
  if (o.attn_block < 0 || o.attn_block > 1) return "attn_block must be 0 or 1";
  if (o.gemv_k_tail < 0 || o.gemv_k_tail > 1) return "gemv_k_tail must be 0 or 1";
  return "";
}

}  // namespace mlra
