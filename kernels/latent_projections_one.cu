// The one-token fused latent kernels (latent_projections.cu holds the tiled 1..8 token ones;
// KernelOptions::latent_fused_tiled picks between them for one-token steps). One launch each:
// queries (q~ = W_UK^T q_nope for every virtual head, q_pe = RoPE(W_rope c_q) once per head and
// copied to each of its virtual heads) and the up-projection (o_h = alpha * sum over the head's
// units of W_UV z). The reference composes 2U + 1 and U launches of linear_batched/rope (Backend
// defaults); at batch 1 those tiny launches cost more than the bytes they move. f32 accumulation;
// q_pe is roped before its one bf16 rounding.
#include <cuda_bf16.h>

#include <algorithm>

#include "kernels/cuda_check.h"
#include "kernels/latent_projections.h"
#include "kernels/pdl.cuh"
#include "kernels/rope_freq.cuh"

namespace mlra::cuda {
namespace {

using bf16 = __nv_bfloat16;
constexpr int kThreads = 128;
constexpr int kOneToken = 1;

__device__ __forceinline__ int unit_of_virtual(const LatentProjParams& p, int v) {
  for (int u = 0; u < p.n_units; ++u)
    if (v >= p.unit[u].v0 && v < p.unit[u].v0 + p.unit[u].n_heads) return u;
  return -1;
}

// 8 bf16 from 16 B-aligned memory into f32.
__device__ __forceinline__ void load8(const bf16* src, float (&f)[8]) {
  const uint4 raw = *reinterpret_cast<const uint4*>(src);
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 x = __bfloat1622float2(h[i]);
    f[2 * i] = x.x;
    f[2 * i + 1] = x.y;
  }
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Blocks [0, n_virt): q~ of virtual head v (thread per output column, W_UK rows coalesced).
// Blocks [n_virt, n_virt + heads): q_pe of local head h (warp per row of W_rope), roped, copied.
template <int T>
__global__ void __launch_bounds__(kThreads) latent_queries_kernel(LatentProjParams p) {
  pdl_wait();  // launched with PDL: q_nope, cq and positions come from earlier ops
  pdl_launch_dependents();
  extern __shared__ float xs[];  // [T][dn] or [T][r_q] inputs, then [T][dr] q_pe
  const int vw = p.width + p.dr;
  if (int(blockIdx.x) < p.n_virt) {
    const int v = blockIdx.x, u = unit_of_virtual(p, v);
    const int h = p.unit[u].head0 + (v - p.unit[u].v0);
    for (int i = threadIdx.x; i < T * p.dn; i += kThreads)
      xs[i] =
          i / p.dn < p.tokens
              ? __bfloat162float(p.q_nope[(i / p.dn) * p.q_nope_ld + int64_t(h) * p.dn + i % p.dn])
              : 0.0f;
    __syncthreads();
    const bf16* w = p.unit[u].w_uk + int64_t(v - p.unit[u].v0) * p.dn * p.width;
    for (int j = threadIdx.x; j < p.width; j += kThreads) {
      float acc[T] = {};
#pragma unroll 8
      for (int k = 0; k < p.dn; ++k) {
        const float wk = __bfloat162float(w[int64_t(k) * p.width + j]);
#pragma unroll
        for (int t = 0; t < T; ++t) acc[t] += xs[t * p.dn + k] * wk;
      }
#pragma unroll
      for (int t = 0; t < T; ++t)
        if (t < p.tokens) p.qv[t * p.qv_ld + int64_t(v) * vw + j] = __float2bfloat16(acc[t]);
    }
    return;
  }
  const int h = blockIdx.x - p.n_virt;
  for (int i = threadIdx.x; i < T * p.r_q; i += kThreads)
    xs[i] = i / p.r_q < p.tokens ? __bfloat162float(p.cq[(i / p.r_q) * p.cq_ld + i % p.r_q]) : 0.0f;
  __syncthreads();
  float* pe = xs + T * p.r_q;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (int j = warp; j < p.dr; j += kThreads / 32) {
    const bf16* row = p.rope_w + (int64_t(h) * p.dr + j) * p.rope_ld;
    float acc[T] = {};
    for (int k = lane * 8; k < p.r_q; k += 32 * 8) {
      float f[8];
      load8(row + k, f);
#pragma unroll
      for (int t = 0; t < T; ++t)
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[t] += f[e] * xs[t * p.r_q + k + e];
    }
#pragma unroll
    for (int t = 0; t < T; ++t) {
      const float s = warp_sum(acc[t]);
      if (lane == 0) pe[t * p.dr + j] = s;
    }
  }
  __syncthreads();
  const int half = p.dr / 2;
  for (int i = threadIdx.x; i < p.tokens * half; i += kThreads) {
    const int t = i / half, k = i % half;
    const float theta = float(p.positions[t]) * rope_inv_freq(k, p.dr, p.rope_base);
    float s, c;
    sincosf(theta, &s, &c);
    const float u1 = pe[t * p.dr + k], u2 = pe[t * p.dr + k + half];
    const bf16 r1 = __float2bfloat16(u1 * c - u2 * s), r2 = __float2bfloat16(u1 * s + u2 * c);
    for (int u = 0; u < p.n_units; ++u) {
      const LatentUnitDev& un = p.unit[u];
      if (h < un.head0 || h >= un.head0 + un.n_heads) continue;
      const int64_t at = t * p.qv_ld + int64_t(un.v0 + h - un.head0) * vw + p.width + k;
      p.qv[at] = r1;
      p.qv[at + half] = r2;
    }
  }
}

// grid (heads, ceil(dn / 8)): warp per output row i of head h, lanes over 8-wide chunks of
// every covering unit's W_UV row and z.
template <int T>
__global__ void __launch_bounds__(256) latent_up_kernel(LatentProjParams p) {
  pdl_wait();  // launched with PDL: z is the attention's output
  pdl_launch_dependents();
  const int h = blockIdx.x, lane = threadIdx.x % 32, i = blockIdx.y * 8 + threadIdx.x / 32;
  if (i >= p.dn) return;
  float acc[T] = {};
  bool covered = false;
  const int chunks = p.width / 8;
  for (int u = 0; u < p.n_units; ++u) {
    const LatentUnitDev& un = p.unit[u];
    if (h < un.head0 || h >= un.head0 + un.n_heads) continue;
    covered = true;
    const int vh = h - un.head0, v = un.v0 + vh;
    const bf16* w = un.w_uv + (int64_t(vh) * p.dn + i) * p.width;
    for (int c = lane; c < chunks; c += 32) {
      float f[8];
      load8(w + c * 8, f);
#pragma unroll
      for (int t = 0; t < T; ++t) {
        float zt[8];
        load8(p.z + t * p.z_ld + int64_t(v) * p.width + c * 8, zt);
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[t] += f[e] * zt[e];
      }
    }
  }
  if (!covered) return;
#pragma unroll
  for (int t = 0; t < T; ++t) {
    const float s = warp_sum(acc[t]);
    if (lane == 0 && t < p.tokens)
      p.o[t * p.o_ld + int64_t(h) * p.dn + i] = __float2bfloat16(p.alpha * s);
  }
}

}  // namespace

size_t latent_queries_one_smem(const LatentProjParams& p) {
  return sizeof(float) * size_t(kOneToken) * size_t(std::max(p.dn, p.r_q + p.dr));
}

bool latent_projections_one_support(const LatentProjParams& p) {
  return p.tokens == 1 && p.n_units >= 1 && p.n_units <= kMaxLatentUnits && p.width % 8 == 0 &&
         p.dn >= 1 && p.dr % 2 == 0 && p.dr >= 2 && p.r_q % 8 == 0 &&
         latent_queries_one_smem(p) <= 48 * 1024;
}

void launch_latent_queries_one(const LatentProjParams& p, cudaStream_t stream) {
  MLRA_REQUIRE(latent_projections_one_support(p),
               "latent queries (one-token kernel): one token, 1..8 units, width % 8 == 0, even dr, "
               "r_q % 8 == 0, inputs within 48 KB of shared memory");
  const dim3 grid{unsigned(p.n_virt + p.heads)};
  launch_pdl(latent_queries_kernel<kOneToken>, grid, kThreads, latent_queries_one_smem(p), stream,
             p);
}

void launch_latent_up_one(const LatentProjParams& p, cudaStream_t stream) {
  MLRA_REQUIRE(p.tokens == 1 && p.n_units >= 1 && p.n_units <= kMaxLatentUnits && p.width % 8 == 0,
               "latent up-projection (one-token kernel): one token, 1..8 units, width % 8 == 0");
  const dim3 grid{unsigned(p.heads), unsigned((p.dn + 7) / 8)};
  launch_pdl(latent_up_kernel<kOneToken>, grid, 256, 0, stream, p);
}

}  // namespace mlra::cuda
