// Range checks of KernelOptions; see kernel_options.h.
#include "kernels/kernel_options.h"

namespace mlra {

std::string kernel_options_error(const KernelOptions& o) {
  if (o.gemv_max_rows < 0 || o.gemv_max_rows > KernelOptions::kMaxGemvRows)
    return "gemv_max_rows must be in 0.." + std::to_string(KernelOptions::kMaxGemvRows);
  if (o.kv_split_per_sm < 0 || o.kv_split_per_sm > KernelOptions::kMaxKvSplitPerSm)
    return "kv_split_per_sm must be in 0.." + std::to_string(KernelOptions::kMaxKvSplitPerSm) +
           " (0: automatic)";
  if (o.gemv_fused_norm < 0 || o.gemv_fused_norm > 3)
    return "gemv_fused_norm must be in 0..3 (bits: 1 linear_normed, 2 linear_swiglu_normed)";
  return "";
}

}  // namespace mlra
