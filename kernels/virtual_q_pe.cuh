// One q_pe pair of a latent query, roped and stored into every virtual head that shares its query
// head: the fused query kernel (latent_projections.cu) and the attention front (attn_block.cu)
// both sum a head's pair (rows k and k + dr/2 of its W_rope) and finish it here, so the rounding
// and the layout of qv ([n_virt, width + dr] per token: q~ then q_pe) are one definition.
#pragma once

#include <cuda_bf16.h>

#include "kernels/latent_projections.h"
#include "kernels/rope_freq.cuh"

namespace mlra::cuda {

// u1, u2: the f32 sums of pair k (0 <= k < dr/2) of query head h at `position`.
__device__ __forceinline__ void store_roped_q_pe(const LatentUnitDev* units, int n_units,
                                                 __nv_bfloat16* qv, int width, int dr, int h, int k,
                                                 float u1, float u2, int32_t position,
                                                 double rope_base) {
  float s, c;
  sincosf(float(position) * rope_inv_freq(k, dr, rope_base), &s, &c);
  const __nv_bfloat16 r1 = __float2bfloat16(u1 * c - u2 * s);
  const __nv_bfloat16 r2 = __float2bfloat16(u1 * s + u2 * c);
  const int half = dr / 2, vw = width + dr;
  for (int u = 0; u < n_units; ++u) {
    const LatentUnitDev& un = units[u];
    if (h < un.head0 || h >= un.head0 + un.n_heads) continue;
    const int64_t at = int64_t(un.v0 + h - un.head0) * vw + width + k;
    qv[at] = r1;
    qv[at + half] = r2;
  }
}

}  // namespace mlra::cuda
