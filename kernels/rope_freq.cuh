// RoPE inverse frequency exactly as the CPU reference computes it: 1 / base^(2k/n) in double,
// rounded once to f32 (shared by every kernel that ropes).
#pragma once

namespace mlra::cuda {

__device__ __forceinline__ float rope_inv_freq(int k, int rot_dim, double base) {
  return float(1.0 / pow(base, double(2 * k) / double(rot_dim)));
}

}  // namespace mlra::cuda
