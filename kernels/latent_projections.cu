// The per-head projections of absorbed latent attention for one token, one launch each: queries
// (q~ = W_UK^T q_nope for every virtual head, q_pe = RoPE(W_rope c_q) once per head and copied to
// each of its virtual heads) and the up-projection (o_h = alpha * sum over the head's units of
// W_UV z). The reference composes 2U + 1 and U launches of linear_batched/rope (Backend
// defaults); at decode those small launches cost more than the bytes they move. Both kernels are
// built for memory-level parallelism: each thread issues all its 16-byte weight loads at once,
// and the partial sums meet in registers and shared memory in a fixed order (deterministic). f32
// accumulation; q_pe is roped before its one bf16 rounding.
#include <cuda_bf16.h>

#include "kernels/cuda_check.h"
#include "kernels/latent_projections.h"
#include "kernels/pdl.cuh"
#include "kernels/rope_freq.cuh"
#include "kernels/virtual_q_pe.cuh"

namespace mlra::cuda {
namespace {

using bf16 = __nv_bfloat16;
constexpr int kThreads = 256, kWarps = kThreads / 32;
constexpr int kLoads = 8;       // 16-byte W_UK loads in flight per thread (dn 128 at width 128)
constexpr int kRopePairs = 16;  // rope pairs (rows j, j + dr/2) of W_rope per block: 2 per warp
constexpr int kPerRow = 4;      // 8-wide chunks per W_rope row in flight per lane
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
// q_nope[h, k] from shared memory, and the k slices are summed by shuffles inside a warp, then
// across warps in shared memory. smem: [dn] x, then [kWarps][width] partial sums.
__device__ void q_tilde_block(const LatentProjParams& p, int v, float* smem) {
  const int u = unit_of_virtual(p, v);
  const int h = p.unit[u].head0 + (v - p.unit[u].v0);
  const int ct = p.width / 8, slices = kThreads / ct;  // ct divides 32 (launcher checks)
  const int c = int(threadIdx.x) % ct, slice = int(threadIdx.x) / ct;
  const bf16* w = p.unit[u].w_uk + int64_t(v - p.unit[u].v0) * p.dn * p.width + 8 * c;
  pdl_wait();  // q_nope comes from the previous op
  uint4 wv[kLoads];
#pragma unroll
  for (int j = 0; j < kLoads; ++j) {
    const int k = slice + j * slices;
    wv[j] = k < p.dn ? ldg16(w + int64_t(k) * p.width) : make_uint4(0, 0, 0, 0);
  }
  float* xs = smem;
  for (int k = threadIdx.x; k < p.dn; k += kThreads)
    xs[k] = __bfloat162float(p.q_nope[int64_t(h) * p.dn + k]);
  __syncthreads();
  float acc[8] = {};
#pragma unroll
  for (int j = 0; j < kLoads; ++j) {
    const int k = slice + j * slices;
    if (k >= p.dn) break;
    float f[8];
    unpack8(wv[j], f);
    const float x = xs[k];
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[e] = fmaf(x, f[e], acc[e]);
  }
  // Lanes l and l ^ ct.. of a warp hold other k slices of the same columns.
#pragma unroll
  for (int e = 0; e < 8; ++e)
    for (int off = ct; off < 32; off <<= 1) acc[e] += __shfl_xor_sync(0xffffffffu, acc[e], off);
  float* red = smem + p.dn;  // [kWarps][width]
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane < ct)
#pragma unroll
    for (int e = 0; e < 8; ++e) red[warp * p.width + 8 * lane + e] = acc[e];
  __syncthreads();
  const int vw = p.width + p.dr;
  for (int n = threadIdx.x; n < p.width; n += kThreads) {
    float s = 0.0f;
#pragma unroll
    for (int wi = 0; wi < kWarps; ++wi) s += red[wi * p.width + n];
    p.qv[int64_t(v) * vw + n] = __float2bfloat16(s);
  }
}

// q_pe rows of local head h, rope pairs [pair0, pair0 + kRopePairs): warp w takes pairs
// pair0 + 2w and pair0 + 2w + 1, i.e. rows {a, a + dr/2, b, b + dr/2} of W_rope [dr, r_q], lanes
// over 8-wide chunks of c_q (passes of kPerRow chunks per row). After the warp sums every lane
// holds the four dot products; lane 0 ropes the pairs and writes them to each virtual head of h.
__device__ void q_pe_block(const LatentProjParams& p, int h, int pair0) {
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
  float acc[4] = {};
  uint4 wv[4][kPerRow];
  const bf16* w = p.rope_w + int64_t(h) * p.dr * p.rope_ld + 8 * lane;
  pdl_wait();  // c_q and positions come from earlier ops
  for (int c0 = 0; c0 < chunks; c0 += 32 * kPerRow) {
#pragma unroll
    for (int r = 0; r < 4; ++r)
#pragma unroll
      for (int j = 0; j < kPerRow; ++j) {
        const int c = c0 + j * 32 + lane;
        wv[r][j] = on[r] && c < chunks ? ldg16(w + int64_t(row[r]) * p.rope_ld + 8 * (c0 + j * 32))
                                       : make_uint4(0, 0, 0, 0);
      }
#pragma unroll
    for (int j = 0; j < kPerRow; ++j) {
      const int c = c0 + j * 32 + lane;
      if (c >= chunks) break;
      float f[4][8], x[8];
#pragma unroll
      for (int r = 0; r < 4; ++r) unpack8(wv[r][j], f[r]);
      unpack8(ldg16(p.cq + 8 * c), x);
#pragma unroll
      for (int r = 0; r < 4; ++r)
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[r] = fmaf(x[e], f[r][e], acc[r]);
    }
  }
#pragma unroll
  for (int r = 0; r < 4; ++r) acc[r] = warp_sum(acc[r]);
  if (lane != 0) return;
#pragma unroll
  for (int q = 0; q < 2; ++q)
    if (on[2 * q])
      store_roped_q_pe(p.unit, p.n_units, p.qv, p.width, p.dr, h, row[2 * q], acc[2 * q],
                       acc[2 * q + 1], p.positions[0], p.rope_base);
}

// Blocks [0, n_virt): q~ of virtual head v. Then per local head, ceil(dr/2 / kRopePairs) blocks
// of its q_pe pairs.
__global__ void __launch_bounds__(kThreads, 2) latent_queries_kernel(LatentProjParams p) {
  extern __shared__ float smem[];
  const int b = blockIdx.x;
  if (b < p.n_virt) {
    q_tilde_block(p, b, smem);
  } else {
    const int per_head = (p.dr / 2 + kRopePairs - 1) / kRopePairs, r = b - p.n_virt;
    q_pe_block(p, r / per_head, (r % per_head) * kRopePairs);
  }
  pdl_launch_dependents();
}

// grid (heads, ceil(dn / 8)): warp per output row i of head h. The lanes share the items
// (covering unit, 8-column chunk of W_UV's row and z), kUpItems at a time with all loads issued
// first; the warp sum is written by lane 0.
__global__ void __launch_bounds__(kThreads) latent_up_kernel(LatentProjParams p) {
  const int h = blockIdx.x, lane = threadIdx.x % 32, i = blockIdx.y * 8 + threadIdx.x / 32;
  bool covered = false;
  for (int u = 0; u < p.n_units; ++u)
    covered = covered || (h >= p.unit[u].head0 && h < p.unit[u].head0 + p.unit[u].n_heads);
  const int chunks = p.width / 8, items = p.n_units * chunks;
  float acc = 0.0f;
  uint4 wv[kUpItems];
  int zcol[kUpItems];
  pdl_wait();  // z is the attention's output
  for (int e0 = 0; e0 < items; e0 += 32 * kUpItems) {
#pragma unroll
    for (int j = 0; j < kUpItems; ++j) {
      const int e = e0 + j * 32 + lane, u = e / chunks, c = e % chunks;
      zcol[j] = -1;
      wv[j] = make_uint4(0, 0, 0, 0);
      if (e >= items || i >= p.dn) continue;
      const LatentUnitDev& un = p.unit[u];
      if (h < un.head0 || h >= un.head0 + un.n_heads) continue;
      const int vh = h - un.head0;
      wv[j] = ldg16(un.w_uv + (int64_t(vh) * p.dn + i) * p.width + 8 * c);
      zcol[j] = (un.v0 + vh) * p.width + 8 * c;
    }
#pragma unroll
    for (int j = 0; j < kUpItems; ++j) {
      if (zcol[j] < 0) continue;
      float f[8], z[8];
      unpack8(wv[j], f);
      unpack8(ldg16(p.z + zcol[j]), z);
#pragma unroll
      for (int e = 0; e < 8; ++e) acc = fmaf(f[e], z[e], acc);
    }
  }
  pdl_launch_dependents();
  if (!covered || i >= p.dn) return;
  const float s = warp_sum(acc);
  if (lane == 0) p.o[int64_t(h) * p.dn + i] = __float2bfloat16(p.alpha * s);
}

}  // namespace

bool latent_projections_support(const LatentProjParams& p) {
  const int ct = p.width / 8;
  return p.n_units >= 1 && p.n_units <= kMaxLatentUnits && p.width % 8 == 0 && ct >= 1 &&
         ct <= 32 && 32 % ct == 0 && p.dn >= 1 && p.dn <= kLoads * (kThreads / ct) &&
         p.dr % 2 == 0 && p.dr >= 2 && p.r_q % 8 == 0 && latent_queries_smem(p) <= 48 * 1024;
}

size_t latent_queries_smem(const LatentProjParams& p) {
  return sizeof(float) * (size_t(p.dn) + size_t(kWarps) * size_t(p.width));
}

void launch_latent_queries(const LatentProjParams& p, cudaStream_t stream) {
  MLRA_REQUIRE(latent_projections_support(p),
               "latent queries: 1..8 units, width 8..256 (a power of two times 8), dn within "
               "the thread loads, even dr, r_q % 8 == 0");
  const int per_head = (p.dr / 2 + kRopePairs - 1) / kRopePairs;
  const dim3 grid{unsigned(p.n_virt + p.heads * per_head)};
  launch_pdl(latent_queries_kernel, grid, kThreads, latent_queries_smem(p), stream, p);
}

void launch_latent_up(const LatentProjParams& p, cudaStream_t stream) {
  MLRA_REQUIRE(p.width % 8 == 0 && p.n_units >= 1 && p.n_units <= kMaxLatentUnits,
               "latent up-projection: 1..8 units, width % 8 == 0");
  const dim3 grid{unsigned(p.heads), unsigned((p.dn + 7) / 8)};
  launch_pdl(latent_up_kernel, grid, kThreads, 0, stream, p);
}

}  // namespace mlra::cuda
