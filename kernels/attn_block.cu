// The front of a one-token latent attention layer in one cooperative persistent launch
// (attn_block.h). Block b of G (all resident) owns
//   phase A: x_proj rows share(b) of r_q + groups * width + dr;
//   phase B: q_b_nope rows share(b) of heads * dn, and rope pairs share(b) of heads * dr / 2
//            (rows k and k + dr/2 of a head's W_rope side by side, so a pair is roped by the block
//            that sums it); blocks G - 1 - y run cache-entry item y (latent y, or y == groups:
//            k_pe);
//   phase C: (virtual head, 8-column chunk) items share(b) of n_virt * width / 8, one per warp,
//            the lanes over W_UK's dn rows.
// The GEMVs of A and B are the persistent_gemv.cuh pattern (mlp_block.cu's); their first step is
// loaded before the barrier that opens the phase (phase A's before pdl_wait()), phase C's first
// item likewise. Rows written by other blocks are read through L2 (__ldcg) after the barrier.
#include <cuda_bf16.h>

#include <algorithm>
#include <stdexcept>

#include "kernels/attn_block.h"
#include "kernels/cuda_check.h"
#include "kernels/cuda_ops.h"
#include "kernels/latent_cache_write.cuh"
#include "kernels/pdl.cuh"
#include "kernels/persistent_gemv.cuh"
#include "kernels/persistent_launch.h"
#include "kernels/virtual_q_pe.cuh"

namespace mlra::cuda {
namespace {

using namespace persistent;
using bf16 = __nv_bfloat16;

constexpr int kMaxDn = 256;  // W_UK rows a lane walks: dn / 32 loads in flight
constexpr int kDnLoads = kMaxDn / 32;

struct Params {
  const bf16* x;
  const bf16* wa;  // x_proj [na, d]
  int64_t wa_ld;
  bf16* xp;  // [na]
  int d, na, r_q;
  const bf16* q_norm;
  float q_scale, eps;
  bf16* cq;
  const bf16* wn;  // q_b_nope [heads * dn, r_q]
  int64_t wn_ld;
  bf16* q_nope;
  const bf16* wr;  // W_rope [heads * dr, r_q]
  int64_t wr_ld;
  int heads, dn, dr, width, n_units, n_virt;
  LatentUnitDev unit[kMaxLatentUnits];
  const int32_t* positions;
  double rope_base;
  bf16* qv;
  EntryArgs entry;  // row = xp + r_q
  int xs_elems, part_stride;
  unsigned* barrier;
};

__host__ __device__ inline size_t part_offset(int xs_elems) {
  return (size_t(xs_elems) * 2 + 15) / 16 * 16;
}

__device__ __forceinline__ int unit_of_virtual(const Params& p, int v) {
  for (int u = 0; u < p.n_units; ++u)
    if (v >= p.unit[u].v0 && v < p.unit[u].v0 + p.unit[u].n_heads) return u;
  return 0;  // every v < n_virt lies in a unit (the host checks)
}

// The sum over warps (in order) of part row i.
__device__ __forceinline__ float row_total(const float* part, int stride, int i) {
  float v = 0.0f;
  for (int w = 0; w < kWarps; ++w) v += part[w * stride + i];
  return v;
}

// c_q = RMSNorm(xp[:r_q]) * q_norm * q_scale, bf16 as rms_norm rounds, into xs (every block:
// the row is 2 r_q bytes of L2); block 0 writes cq.
__device__ __forceinline__ void norm_cq(const Params& p, bf16* xs) {
  float ss = 0.0f;
  for (int c = threadIdx.x; c < p.r_q; c += kThreads) {
    const float v = __bfloat162float(__ldcg(p.xp + c));
    ss += v * v;
  }
  const float inv = rsqrtf(block_sum<kThreads>(ss) / float(p.r_q) + p.eps);
  for (int c = threadIdx.x; c < p.r_q; c += kThreads) {
    const float v = __bfloat162float(__ldcg(p.xp + c));
    const bf16 o = __float2bfloat16(__bfloat162float(p.q_norm[c]) * (v * inv) * p.q_scale);
    xs[c] = o;
    if (blockIdx.x == 0) p.cq[c] = o;
  }
  for (int c = p.r_q + threadIdx.x; c < p.xs_elems; c += kThreads) xs[c] = __float2bfloat16(0.0f);
}

// Phase C item: W_UK[v]^T q_nope[h(v)] at columns 8 c .. 8 c + 7, the warp's lanes over rows
// k = lane + 32 j of W_UK[v] ([dn, width]).
struct Item {
  uint4 w[kDnLoads];
};

__device__ __forceinline__ void load_item(const Params& p, int item, Item& it) {
  const int lane = threadIdx.x & 31, chunks = p.width / 8, v = item / chunks, c = item % chunks;
  const LatentUnitDev& u = p.unit[unit_of_virtual(p, v)];
  const bf16* w = u.w_uk + int64_t(v - u.v0) * p.dn * p.width + 8 * c;
#pragma unroll
  for (int j = 0; j < kDnLoads; ++j) {
    const int k = lane + 32 * j;
    it.w[j] = k < p.dn ? load_weights(w + int64_t(k) * p.width) : make_uint4(0, 0, 0, 0);
  }
}

__device__ __forceinline__ void run_item(const Params& p, int item, const Item& it) {
  const int lane = threadIdx.x & 31, chunks = p.width / 8, v = item / chunks, c = item % chunks;
  const LatentUnitDev& u = p.unit[unit_of_virtual(p, v)];
  const int h = u.head0 + (v - u.v0);
  float acc[8] = {};
#pragma unroll
  for (int j = 0; j < kDnLoads; ++j) {
    const int k = lane + 32 * j;
    if (k >= p.dn) break;
    const float q = __bfloat162float(__ldcg(p.q_nope + int64_t(h) * p.dn + k));
    float f[8];
    unpack_bf16x8(it.w[j], f);
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[e] = fmaf(q, f[e], acc[e]);
  }
#pragma unroll
  for (int e = 0; e < 8; ++e)
    for (int off = 16; off > 0; off >>= 1) acc[e] += __shfl_xor_sync(0xffffffffu, acc[e], off);
  if (lane < 8) {
    float s = acc[0];
#pragma unroll
    for (int e = 1; e < 8; ++e)
      if (lane == e) s = acc[e];
    p.qv[int64_t(v) * (p.width + p.dr) + 8 * c + lane] = __float2bfloat16(s);
  }
}

__global__ void __launch_bounds__(kThreads, 1) attn_block_kernel(Params p) {
  extern __shared__ __align__(16) unsigned char smem[];
  bf16* xs = reinterpret_cast<bf16*>(smem);
  float* part = reinterpret_cast<float*>(smem + part_offset(p.xs_elems));
  const int b = blockIdx.x, G = gridDim.x, warp = threadIdx.x >> 5;

  // Phase A: xp rows [a0, a0 + n_a).
  const int a0 = share_begin(p.na, b, G), n_a = share_begin(p.na, b + 1, G) - a0;
  const RowWalk wa{n_a, p.d / 8, 0, (p.d / 8 + kThreads - 1) / kThreads};
  const auto load_a = [&](int i, int c) {
    return load_weights(p.wa + int64_t(a0 + i) * p.wa_ld + int64_t(c) * 8);
  };
  Step s0;
  if (wa.steps() > 0) load_step(s0, wa, 0, load_a);  // weights never change: before pdl_wait()
  pdl_wait();
  for (int c = threadIdx.x; c < p.xs_elems / 8; c += kThreads)
    reinterpret_cast<uint4*>(xs)[c] =
        c < p.d / 8 ? __ldcg(reinterpret_cast<const uint4*>(p.x) + c) : make_uint4(0, 0, 0, 0);
  __syncthreads();
  run_rows(s0, wa, load_a, xs, part, p.part_stride, 0);
  __syncthreads();
  for (int i = threadIdx.x; i < n_a; i += kThreads)
    p.xp[a0 + i] = __float2bfloat16(row_total(part, p.part_stride, i));

  // Phase B's first loads: q_b_nope rows [n0, n0 + n_n), rope pairs [q0, q0 + n_q).
  const int nn = p.heads * p.dn, half = p.dr / 2, pairs = p.heads * half;
  const int n0 = share_begin(nn, b, G), n_n = share_begin(nn, b + 1, G) - n0;
  const int q0 = share_begin(pairs, b, G), n_q = share_begin(pairs, b + 1, G) - q0;
  const int kc = (p.r_q / 8 + kThreads - 1) / kThreads;
  const RowWalk wn{n_n, p.r_q / 8, 0, kc}, wr{2 * n_q, p.r_q / 8, 0, kc};
  const auto load_n = [&](int i, int c) {
    return load_weights(p.wn + int64_t(n0 + i) * p.wn_ld + int64_t(c) * 8);
  };
  const auto load_r = [&](int i, int c) {  // walk row 2j + s: row k + s dr/2 of pair q0 + j's head
    const int pr = q0 + i / 2, row = (pr / half) * p.dr + pr % half + (i & 1) * half;
    return load_weights(p.wr + int64_t(row) * p.wr_ld + int64_t(c) * 8);
  };
  if (wn.steps() > 0) load_step(s0, wn, 0, load_n);
  Step sr;
  if (wr.steps() > 0) load_step(sr, wr, 0, load_r);

  grid_barrier(p.barrier);
  norm_cq(p, xs);
  __syncthreads();  // xs complete, part free (read above), block_sum's array free
  run_rows(s0, wn, load_n, xs, part, p.part_stride, 0);
  run_rows(sr, wr, load_r, xs, part, p.part_stride, n_n);
  __syncthreads();
  for (int i = threadIdx.x; i < n_n; i += kThreads)
    p.q_nope[n0 + i] = __float2bfloat16(row_total(part, p.part_stride, i));
  for (int j = threadIdx.x; j < n_q; j += kThreads) {
    const int pr = q0 + j;
    store_roped_q_pe(p.unit, p.n_units, p.qv, p.width, p.dr, pr / half, pr % half,
                     row_total(part, p.part_stride, n_n + 2 * j),
                     row_total(part, p.part_stride, n_n + 2 * j + 1), p.positions[0], p.rope_base);
  }
  // The cache entry: xp's latent and k_pe columns are complete since the barrier, and only the
  // block of an item reads or writes its columns.
  for (int y = G - 1 - b; y <= p.entry.groups; y += G) {
    latent_entry<kThreads>(p.entry, 0, y);
    __syncthreads();  // block_sum's array, before another item
  }

  // Phase C's first item per warp.
  const int n_items = p.n_virt * (p.width / 8);
  const int i0 = share_begin(n_items, b, G), n_c = share_begin(n_items, b + 1, G) - i0;
  Item it;
  if (warp < n_c) load_item(p, i0 + warp, it);
  grid_barrier(p.barrier);
  pdl_launch_dependents();
  for (int i = warp; i < n_c; i += kWarps) {
    if (i != warp) load_item(p, i0 + i, it);
    run_item(p, i0 + i, it);
  }
}

bool aligned16(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15u) == 0;
}

bool bf16_rows(const MatView& m, int64_t rows, int64_t cols, bool aligned) {
  return m.dtype == DType::kBF16 && m.data != nullptr && m.rows == rows && m.cols == cols &&
         (!aligned || (m.ld % 8 == 0 && aligned16(m.data)));
}

int part_stride_for(const AttnBlockOperands& o, int grid) {
  const auto share = [&](int64_t n) { return (n + grid - 1) / grid; };
  const int64_t heads = o.q_nope.cols / std::max(o.dn, 1);
  return int(std::max(share(o.xp.cols), share(heads * o.dn) + 2 * share(heads * (o.dr / 2))));
}

int xs_elems_for(const AttnBlockOperands& o) {
  return int((std::max(o.x.cols, o.cq.cols) + 7) / 8 * 8);
}

size_t smem_for(const AttnBlockOperands& o, int grid) {
  return part_offset(xs_elems_for(o)) + size_t(kWarps) * size_t(part_stride_for(o, grid)) * 4;
}

}  // namespace

AttnBlockKernel::AttnBlockKernel(int device) : device_(device) {
  MLRA_CUDA_CHECK(cudaSetDevice(device));
  int coop = 0;
  MLRA_CUDA_CHECK(cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, device));
  if (!coop) throw std::runtime_error("attn_block: the device has no cooperative launch");
  MLRA_CUDA_CHECK(cudaDeviceGetAttribute(&sms_, cudaDevAttrMultiProcessorCount, device));
  int optin = 0;
  MLRA_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  cudaFuncAttributes fa{};
  MLRA_CUDA_CHECK(cudaFuncGetAttributes(&fa, attn_block_kernel));
  MLRA_CUDA_CHECK(cudaFuncSetAttribute(attn_block_kernel,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       int(size_t(optin) - fa.sharedSizeBytes)));
  MLRA_CUDA_CHECK(cudaMalloc(&barrier_, 2 * sizeof(unsigned)));
  MLRA_CUDA_CHECK(cudaMemset(barrier_, 0, 2 * sizeof(unsigned)));
  pdl_ = cooperative_launch_works(true, false) && cooperative_launch_works(true, true);
  capturable_ = pdl_ || cooperative_launch_works(false, true);
}

AttnBlockKernel::~AttnBlockKernel() {
  cudaSetDevice(device_);
  cudaFree(barrier_);  // synchronizes: no launch still uses the words
}

bool AttnBlockKernel::supports(const AttnBlockOperands& o) const {
  const int64_t d = o.x.cols, r_q = o.cq.cols, dn = o.dn, dr = o.dr, w = o.width;
  if (d < 8 || d % 8 != 0 || d > kMaxK || r_q < 8 || r_q % 8 != 0 || r_q > kMaxK) return false;
  if (dn < 1 || dn > kMaxDn || dr < 2 || dr % 2 != 0 || w < 8 || w % 8 != 0 || o.groups < 1)
    return false;
  if (o.n_units < 1 || o.n_units > kMaxLatentUnits || o.q_nope.cols % dn != 0) return false;
  const int64_t heads = o.q_nope.cols / dn, na = r_q + o.groups * w + dr;
  if (!bf16_rows(o.x, 1, d, false) || !aligned16(o.x.data) || !bf16_rows(o.x_proj, na, d, true) ||
      !bf16_rows(o.xp, 1, na, false) || !bf16_rows(o.cq, 1, r_q, false) ||
      !bf16_rows(o.q_b_nope, heads * dn, r_q, true) || !bf16_rows(o.q_nope, 1, heads * dn, false) ||
      !bf16_rows(o.rope_w, heads * dr, r_q, true))
    return false;
  if (o.q_norm == nullptr || o.q_norm_dtype != DType::kBF16 || o.latent_norms == nullptr ||
      o.positions == nullptr || o.slots == nullptr)
    return false;
  int64_t n_virt = 0;
  for (int u = 0; u < o.n_units; ++u) {
    const LatentUnitDev& un = o.unit[u];
    if (un.w_uk == nullptr || !aligned16(un.w_uk) || un.n_heads < 1 || un.head0 < 0 ||
        un.head0 + un.n_heads > heads || un.v0 < 0)
      return false;
    n_virt = std::max<int64_t>(n_virt, un.v0 + un.n_heads);
  }
  // Every virtual head in exactly one unit (unit_of_virtual).
  for (int64_t v = 0; v < n_virt; ++v) {
    int covering = 0;
    for (int u = 0; u < o.n_units; ++u)
      covering += v >= o.unit[u].v0 && v < o.unit[u].v0 + o.unit[u].n_heads;
    if (covering != 1) return false;
  }
  if (!bf16_rows(o.qv, 1, n_virt * (w + dr), false)) return false;
  const int64_t row = o.groups * w + dr;
  if (o.cache.data == nullptr || o.cache.row_width < row) return false;
  if (o.cache.encoding == CacheEncoding::kFp8E4M3) {
    const int64_t q = o.cache.fp8.quantized(), g = o.cache.fp8.group_width;
    if (g < 1 || (std::min(row, q) % g) != 0) return false;  // whole groups, as cache_write asks
  }
  // Written before a barrier and read after it by other blocks: no overlap with an input.
  const void* outs[] = {o.xp.data, o.cq.data, o.q_nope.data, o.qv.data};
  for (const void* out : outs)
    if (out == o.x.data) return false;
  return true;
}

bool AttnBlockKernel::runs_on(cudaStream_t stream) const {
  if (capturable_) return true;
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  MLRA_CUDA_CHECK(cudaStreamIsCapturing(stream, &status));
  return status == cudaStreamCaptureStatusNone;
}

int AttnBlockKernel::grid_for(size_t smem) {
  auto per_sm = blocks_per_sm_.find(smem);
  if (per_sm == blocks_per_sm_.end()) {
    int n = 0;
    MLRA_CUDA_CHECK(
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, attn_block_kernel, kThreads, smem));
    per_sm = blocks_per_sm_.emplace(smem, n).first;
  }
  return sms_ * per_sm->second;
}

void AttnBlockKernel::launch(const AttnBlockOperands& o, cudaStream_t stream) {
  MLRA_REQUIRE(supports(o),
               "attn_block: unsupported operands (one row, bf16, d and r_q multiples of 8, "
               "1..8 units with w_uk, dn <= 256, width % 8 == 0)");
  // Shares shrink as the grid grows, so the smem of a one-block-per-SM grid bounds every grid.
  const int grid = grid_for(smem_for(o, sms_));
  MLRA_REQUIRE(grid > 0, "attn_block: the kernel does not fit one resident block per SM");
  const bool fp8 = o.cache.encoding == CacheEncoding::kFp8E4M3;
  const int64_t r_q = o.cq.cols, row = o.groups * int64_t(o.width) + o.dr;
  Params p{};
  p.x = static_cast<const bf16*>(o.x.data);
  p.wa = static_cast<const bf16*>(o.x_proj.data);
  p.wa_ld = o.x_proj.ld;
  p.xp = static_cast<bf16*>(o.xp.data);
  p.d = int(o.x.cols);
  p.na = int(o.xp.cols);
  p.r_q = int(r_q);
  p.q_norm = static_cast<const bf16*>(o.q_norm);
  p.q_scale = o.q_scale;
  p.eps = o.eps;
  p.cq = static_cast<bf16*>(o.cq.data);
  p.wn = static_cast<const bf16*>(o.q_b_nope.data);
  p.wn_ld = o.q_b_nope.ld;
  p.q_nope = static_cast<bf16*>(o.q_nope.data);
  p.wr = static_cast<const bf16*>(o.rope_w.data);
  p.wr_ld = o.rope_w.ld;
  p.heads = int(o.q_nope.cols / o.dn);
  p.dn = o.dn;
  p.dr = o.dr;
  p.width = o.width;
  p.n_units = o.n_units;
  p.n_virt = int(o.qv.cols / (o.width + o.dr));
  for (int u = 0; u < o.n_units; ++u) p.unit[u] = o.unit[u];
  p.positions = o.positions;
  p.rope_base = double(o.rope_base);
  p.qv = static_cast<bf16*>(o.qv.data);
  p.entry = EntryArgs{p.xp + r_q,
                      DType::kBF16,
                      row,
                      row,
                      o.groups,
                      o.width,
                      o.dr,
                      o.latent_norms,
                      o.latent_norms_dtype,
                      o.eps,
                      o.kv_scale,
                      o.positions,
                      double(o.rope_base),
                      o.slots,
                      o.cache.data,
                      o.cache.dtype,
                      fp8 ? 0 : o.cache.num_pages * o.cache.page_size,
                      o.cache.row_width};
  p.xs_elems = xs_elems_for(o);
  p.part_stride = part_stride_for(o, grid);
  p.barrier = barrier_;
  cudaLaunchAttribute attr[2];
  const cudaLaunchConfig_t cfg = cooperative_launch_config(dim3(unsigned(grid)), dim3(kThreads),
                                                           smem_for(o, grid), stream, attr, pdl_);
  MLRA_CUDA_CHECK(cudaLaunchKernelEx(&cfg, attn_block_kernel, p));
  if (fp8) launch_fp8_cache_write(o.xp.cols_slice(r_q, row), o.slots, o.cache, 0, stream);
}

bool attn_block_operands(const Backend::AttnBlockArgs& a, AttnBlockOperands& o) {
  if (a.units.empty() || a.units.size() > size_t(kMaxLatentUnits)) return false;
  if (a.q_norm.numel() != a.cq.cols || a.latent_norms.numel() != a.groups * a.width ||
      a.latent_norms.dtype != DType::kBF16)
    return false;
  for (size_t i = 0; i < a.units.size(); ++i) {
    const auto& u = a.units[i];
    if (u.w_uk.data == nullptr || u.w_uk.dtype != DType::kBF16 ||
        u.w_uk.numel() != u.n_heads * a.dn * a.width)
      return false;
    o.unit[i] = {static_cast<const __nv_bfloat16*>(u.w_uk.data),
                 static_cast<const __nv_bfloat16*>(u.w_uv.data), int32_t(u.head0),
                 int32_t(u.n_heads), int32_t(u.v0)};
  }
  o.x = a.x;
  o.x_proj = a.x_proj;
  o.xp = a.xp;
  o.q_norm = a.q_norm.data;
  o.q_norm_dtype = a.q_norm.dtype;
  o.q_scale = a.q_scale;
  o.cq = a.cq;
  o.q_b_nope = a.q_b_nope;
  o.q_nope = a.q_nope;
  o.rope_w = a.rope_w;
  o.n_units = int(a.units.size());
  o.dn = int(a.dn);
  o.dr = int(a.dr);
  o.width = int(a.width);
  o.latent_norms = a.latent_norms.data;
  o.latent_norms_dtype = a.latent_norms.dtype;
  o.groups = int(a.groups);
  o.kv_scale = a.kv_scale;
  o.eps = a.eps;
  o.positions = a.positions;
  o.rope_base = a.rope_base;
  o.slots = a.slots;
  o.cache = a.cache;
  o.qv = a.qv;
  return true;
}

}  // namespace mlra::cuda
