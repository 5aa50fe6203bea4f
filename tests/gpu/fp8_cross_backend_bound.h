// How far a CUDA forward over an FP8 cache may sit from the CPU's over the same steps.
//
// The two backends cache different values: the CUDA backend quantizes bf16 activations, the CPU
// backend float32 ones. A value whose bf16 and float32 forms fall on both sides of an E4M3
// rounding boundary gets codes one step apart (up to 1/8 of its size), about one value in 30
// (a bf16 rounding is ~1/32 of an E4M3 step). Those flips move the logits by the same order as
// quantizing itself does, so the bound is the bf16 cache's own cross-backend error plus the
// quantization's effect on the CPU's logits, with a margin. A kernel that reads the wrong scale,
// row or code moves the logits by O(1) and fails it.
#pragma once

namespace mlra::gputest {

// bf16: rel. L2 of CUDA against CPU logits with bf16 caches; quant: rel. L2 of the CPU's FP8-cache
// logits against its bf16-cache logits.
inline double fp8_cross_backend_bound(double bf16, double quant) {
  return 1.25 * (bf16 + quant) + 5e-3;
}

}  // namespace mlra::gputest
