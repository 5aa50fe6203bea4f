// The per-head projections of absorbed latent attention, one launch each, for steps of up to 8
// tokens (templated on the token count rounded up to 1, 2, 4 or 8): queries (q~ = W_UK^T q_nope
// for every virtual head, q_pe = RoPE(W_rope c_q) once per head and copied to each of its
// virtual heads) and the up-projection (o_h = alpha * sum over the head's units of W_UV z). The
// reference composes 2U + 1 and U launches of linear_batched/rope (Backend defaults); at decode
// batches those small launches cost more than the bytes they move. Both kernels are built for
// memory-level parallelism: with p.prefetch_l2 every thread prefetches its weights into L2 before
// pdl_wait() (safe for any operand: L2 is coherent); each issues all its 16-byte loads at once,
// multiplies them with the T token rows (T FMAs per weight, cheap beside the load), and the partial
// sums meet in registers and shared memory in a fixed order (deterministic). f32 accumulation; q_pe
// is roped before its one bf16 rounding.
#include <cuda_bf16.h>

#include <algorithm>

#include "kernels/cuda_check.h"
#include "kernels/latent_projections.h"
#include "kernels/pdl.cuh"
#include "kernels/rope_freq.cuh"

namespace mlra::cuda {
namespace {

using bf16 = __nv_bfloat16;
constexpr int kThreads = 256, kWarps = kThreads / 32;
constexpr int kLoads = 8;       // 16-byte W_UK loads in flight per thread (dn 128 at width 128)
constexpr int kRopePairs = 16;  // rope pairs (rows j, j + dr/2) of W_rope per block: 2 per warp
constexpr int kUpItems = 4;     // (unit, 8-column chunk) items per lane and pass of the up kernel

// Eight bf16 packed in 16 bytes -> f32 (exact: a bf16 is the top half of an f32).
__device__ __forceinline__ void unpack8(const uint4& v, float (&f)[8]) {
  const uint32_t u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    f[2 * i] = __uint_as_float(u[i] << 16);
    f[2 * i + 1] = __uint_as_float(u[i] & 0xffff0000u);
  }
}

__device__ __forceinline__ void prefetch_l2(const void* p) {
  asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
}

__device__ __forceinline__ uint4 ldg16(const bf16* p) {
  return __ldg(reinterpret_cast<const uint4*>(p));
}

__device__ __forceinline__ int unit_of_virtual(const LatentProjParams& p, int v) {
  for (int u = 0; u < p.n_units; ++u)
    if (v >= p.unit[u].v0 && v < p.unit[u].v0 + p.unit[u].n_heads) return u;
  return 0;  // every v < n_virt lies in a unit (the backend builds the table)
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// q~ of virtual head v: W_UK[v] is [dn, width] (width contiguous). Thread (slice, c) loads the 8
// columns 8c .. 8c + 7 of rows k = slice, slice + slices, ... (all at once), multiplies them with
// q_nope[t, h, k] from shared memory, and the k slices are summed by shuffles inside a warp, then
// across warps in shared memory. smem: [T][dn] x, then [kWarps][T][width] partial sums.
template <int T>
__device__ void q_tilde_block(const LatentProjParams& p, int v, float* smem) {
  const int u = unit_of_virtual(p, v);
  const int h = p.unit[u].head0 + (v - p.unit[u].v0);
  const int ct = p.width / 8, slices = kThreads / ct;  // ct divides 32 (launcher checks)
  const int c = int(threadIdx.x) % ct, slice = int(threadIdx.x) / ct;
  const bf16* w = p.unit[u].w_uk + int64_t(v - p.unit[u].v0) * p.dn * p.width + 8 * c;
#pragma unroll
  for (int j = 0; j < kLoads; ++j)
    if (p.prefetch_l2 && slice + j * slices < p.dn)
      prefetch_l2(w + int64_t(slice + j * slices) * p.width);
  pdl_wait();  // q_nope comes from the previous op
  uint4 wv[kLoads];
#pragma unroll
  for (int j = 0; j < kLoads; ++j) {
    const int k = slice + j * slices;
    wv[j] = k < p.dn ? ldg16(w + int64_t(k) * p.width) : make_uint4(0, 0, 0, 0);
  }
  float* xs = smem;
  for (int i = threadIdx.x; i < T * p.dn; i += kThreads) {
    const int t = i / p.dn, k = i % p.dn;
    xs[i] =
        t < p.tokens ? __bfloat162float(p.q_nope[t * p.q_nope_ld + int64_t(h) * p.dn + k]) : 0.0f;
  }
  __syncthreads();
  float acc[T][8] = {};
#pragma unroll
  for (int j = 0; j < kLoads; ++j) {
    const int k = slice + j * slices;
    if (k >= p.dn) break;
    float f[8];
    unpack8(wv[j], f);
#pragma unroll
    for (int t = 0; t < T; ++t) {
      const float x = xs[t * p.dn + k];
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[t][e] = fmaf(x, f[e], acc[t][e]);
    }
  }
  // Lanes l and l ^ ct.. of a warp hold other k slices of the same columns.
#pragma unroll
  for (int t = 0; t < T; ++t)
#pragma unroll
    for (int e = 0; e < 8; ++e)
      for (int off = ct; off < 32; off <<= 1)
        acc[t][e] += __shfl_xor_sync(0xffffffffu, acc[t][e], off);
  float* red = smem + T * p.dn;  // [kWarps][T][width]
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane < ct)
#pragma unroll
    for (int t = 0; t < T; ++t)
#pragma unroll
      for (int e = 0; e < 8; ++e) red[(warp * T + t) * p.width + 8 * lane + e] = acc[t][e];
  __syncthreads();
  const int vw = p.width + p.dr;
  for (int i = threadIdx.x; i < p.tokens * p.width; i += kThreads) {
    const int t = i / p.width, n = i % p.width;
    float s = 0.0f;
#pragma unroll
    for (int wi = 0; wi < kWarps; ++wi) s += red[(wi * T + t) * p.width + n];
    p.qv[t * p.qv_ld + int64_t(v) * vw + n] = __float2bfloat16(s);
  }
}

// q_pe rows of local head h, rope pairs [pair0, pair0 + kRopePairs): warp w takes pairs
// pair0 + 2w and pair0 + 2w + 1, i.e. rows {a, a + dr/2, b, b + dr/2} of W_rope [dr, r_q], lanes
// over 8-wide chunks of c_q (passes of kPerRow chunks per row). After the warp sums every lane
// holds the four dot products per token; lane t ropes token t's pairs and writes them to each
// virtual head of h.
template <int T>
__device__ void q_pe_block(const LatentProjParams& p, int h, int pair0) {
  constexpr int kPerRow = T >= 2 ? 2 : 4;  // 8-wide chunks per row in flight (registers)
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, half = p.dr / 2;
  int row[4];
  bool on[4];
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const int pair = pair0 + 2 * warp + (r >> 1);
    on[r] = pair < half;
    row[r] = pair + (r & 1) * half;
  }
  const int chunks = p.r_q / 8;
  float acc[T][4] = {};
  uint4 wv[4][kPerRow];
  const bf16* w = p.rope_w + int64_t(h) * p.dr * p.rope_ld + 8 * lane;
  auto load = [&](int c0, bool prefetch) {
#pragma unroll
    for (int r = 0; r < 4; ++r)
#pragma unroll
      for (int j = 0; j < kPerRow; ++j) {
        const int c = c0 + j * 32 + lane;
        const bf16* at = w + int64_t(row[r]) * p.rope_ld + 8 * (c0 + j * 32);
        if (prefetch) {
          if (on[r] && c < chunks) prefetch_l2(at);
        } else {
          wv[r][j] = on[r] && c < chunks ? ldg16(at) : make_uint4(0, 0, 0, 0);
        }
      }
  };
  if (p.prefetch_l2) load(0, true);
  pdl_wait();  // c_q and positions come from earlier ops
  for (int c0 = 0; c0 < chunks; c0 += 32 * kPerRow) {
    load(c0, false);
#pragma unroll
    for (int j = 0; j < kPerRow; ++j) {
      const int c = c0 + j * 32 + lane;
      if (c >= chunks) break;
      float f[4][8];
#pragma unroll
      for (int r = 0; r < 4; ++r) unpack8(wv[r][j], f[r]);
#pragma unroll
      for (int t = 0; t < T; ++t) {
        if (t >= p.tokens) break;
        float x[8];
        unpack8(ldg16(p.cq + t * p.cq_ld + 8 * c), x);
#pragma unroll
        for (int r = 0; r < 4; ++r)
#pragma unroll
          for (int e = 0; e < 8; ++e) acc[t][r] = fmaf(x[e], f[r][e], acc[t][r]);
      }
    }
  }
#pragma unroll
  for (int t = 0; t < T; ++t)
#pragma unroll
    for (int r = 0; r < 4; ++r) acc[t][r] = warp_sum(acc[t][r]);
  const int vw = p.width + p.dr;
#pragma unroll
  for (int t = 0; t < T; ++t) {
    if (t != lane || t >= p.tokens) continue;
#pragma unroll
    for (int q = 0; q < 2; ++q) {
      if (!on[2 * q]) continue;
      const int k = row[2 * q];
      const float theta = float(p.positions[t]) * rope_inv_freq(k, p.dr, p.rope_base);
      float s, c;
      sincosf(theta, &s, &c);
      const float u1 = acc[t][2 * q], u2 = acc[t][2 * q + 1];
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
}

// Blocks [0, n_virt): q~ of virtual head v. Then per local head, ceil(dr/2 / kRopePairs) blocks
// of its q_pe pairs.
template <int T>
__global__ void __launch_bounds__(kThreads, 2) latent_queries_kernel(LatentProjParams p) {
  extern __shared__ float smem[];
  const int b = blockIdx.x;
  if (b < p.n_virt) {
    q_tilde_block<T>(p, b, smem);
  } else {
    const int per_head = (p.dr / 2 + kRopePairs - 1) / kRopePairs, r = b - p.n_virt;
    q_pe_block<T>(p, r / per_head, (r % per_head) * kRopePairs);
  }
  pdl_launch_dependents();
}

// grid (heads, ceil(dn / 8)): warp per output row i of head h. The lanes share the items
// (covering unit, 8-column chunk of W_UV's row and z), kUpItems at a time with all loads issued
// first; the warp sum of each token is written by lane 0.
template <int T>
__global__ void __launch_bounds__(kThreads) latent_up_kernel(LatentProjParams p) {
  const int h = blockIdx.x, lane = threadIdx.x % 32, i = blockIdx.y * 8 + threadIdx.x / 32;
  bool covered = false;
  for (int u = 0; u < p.n_units; ++u)
    covered = covered || (h >= p.unit[u].head0 && h < p.unit[u].head0 + p.unit[u].n_heads);
  const int chunks = p.width / 8, items = p.n_units * chunks;
  float acc[T] = {};
  uint4 wv[kUpItems];
  int zcol[kUpItems];
  auto load = [&](int e0, bool prefetch) {
#pragma unroll
    for (int j = 0; j < kUpItems; ++j) {
      const int e = e0 + j * 32 + lane, u = e / chunks, c = e % chunks;
      zcol[j] = -1;
      wv[j] = make_uint4(0, 0, 0, 0);
      if (e >= items || i >= p.dn) continue;
      const LatentUnitDev& un = p.unit[u];
      if (h < un.head0 || h >= un.head0 + un.n_heads) continue;
      const int vh = h - un.head0;
      const bf16* at = un.w_uv + (int64_t(vh) * p.dn + i) * p.width + 8 * c;
      if (prefetch) {
        prefetch_l2(at);
        continue;
      }
      wv[j] = ldg16(at);
      zcol[j] = (un.v0 + vh) * p.width + 8 * c;
    }
  };
  if (p.prefetch_l2) load(0, true);
  pdl_wait();  // z is the attention's output
  for (int e0 = 0; e0 < items; e0 += 32 * kUpItems) {
    load(e0, false);
#pragma unroll
    for (int j = 0; j < kUpItems; ++j) {
      if (zcol[j] < 0) continue;
      float f[8];
      unpack8(wv[j], f);
#pragma unroll
      for (int t = 0; t < T; ++t) {
        if (t >= p.tokens) break;  // T is the token count rounded up: no z rows past it
        float z[8];
        unpack8(ldg16(p.z + t * p.z_ld + zcol[j]), z);
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[t] = fmaf(f[e], z[e], acc[t]);
      }
    }
  }
  pdl_launch_dependents();
  if (!covered || i >= p.dn) return;
#pragma unroll
  for (int t = 0; t < T; ++t) {
    const float s = warp_sum(acc[t]);
    if (lane == 0 && t < p.tokens)
      p.o[t * p.o_ld + int64_t(h) * p.dn + i] = __float2bfloat16(p.alpha * s);
  }
}

// The kernels' token count: p.tokens rounded up to 1, 2, 4 or 8.
int token_tile(int tokens) {
  return tokens <= 1 ? 1 : tokens <= 2 ? 2 : tokens <= 4 ? 4 : 8;
}

template <class Kernel>
void launch_tokens(Kernel k1, Kernel k2, Kernel k4, Kernel k8, int tokens, dim3 grid, size_t smem,
                   cudaStream_t stream, const LatentProjParams& p) {
  const int t = token_tile(tokens);
  launch_pdl(t == 1 ? k1 : t == 2 ? k2 : t == 4 ? k4 : k8, grid, kThreads, smem, stream, p);
}

}  // namespace

bool latent_projections_support(const LatentProjParams& p) {
  const int ct = p.width / 8;
  return p.n_units >= 1 && p.n_units <= kMaxLatentUnits && p.width % 8 == 0 && ct >= 1 &&
         ct <= 32 && 32 % ct == 0 && p.dn >= 1 && p.dn <= kLoads * (kThreads / ct) &&
         p.dr % 2 == 0 && p.dr >= 2 && p.r_q % 8 == 0 && p.tokens >= 1 &&
         p.tokens <= kMaxLatentTokens && latent_queries_smem(p) <= 48 * 1024;
}

size_t latent_queries_smem(const LatentProjParams& p) {
  const size_t t = size_t(token_tile(p.tokens));
  return sizeof(float) * t * (size_t(p.dn) + size_t(kWarps) * size_t(p.width));
}

void launch_latent_queries(const LatentProjParams& p, cudaStream_t stream) {
  MLRA_REQUIRE(latent_projections_support(p),
               "latent queries: 1..8 tokens, 1..8 units, width 8..256 (a power of two times 8), "
               "even dr, r_q % 8 == 0");
  const int per_head = (p.dr / 2 + kRopePairs - 1) / kRopePairs;
  const dim3 grid{unsigned(p.n_virt + p.heads * per_head)};
  launch_tokens(latent_queries_kernel<1>, latent_queries_kernel<2>, latent_queries_kernel<4>,
                latent_queries_kernel<8>, p.tokens, grid, latent_queries_smem(p), stream, p);
}

void launch_latent_up(const LatentProjParams& p, cudaStream_t stream) {
  MLRA_REQUIRE(p.tokens >= 1 && p.tokens <= kMaxLatentTokens && p.width % 8 == 0 &&
                   p.n_units >= 1 && p.n_units <= kMaxLatentUnits,
               "latent up-projection: 1..8 tokens, 1..8 units, width % 8 == 0");
  const dim3 grid{unsigned(p.heads), unsigned((p.dn + 7) / 8)};
  launch_tokens(latent_up_kernel<1>, latent_up_kernel<2>, latent_up_kernel<4>, latent_up_kernel<8>,
                p.tokens, grid, 0, stream, p);
}

}  // namespace mlra::cuda
