// The MLP half of a one-token decode layer in one cooperative persistent launch (mlp_block.h).
// Block b of G (all resident) owns SwiGLU outputs [b F / G, (b+1) F / G) (rows n and F + n of
// [W1; W2] each) and down-projection rows [b d / G, (b+1) d / G). Timeline of a block:
//   thread 0 starts a bulk copy (TMA) of its first down rows into shared memory; every thread
//   issues its first fc12 loads; pdl_wait(); the block norms the whole row (acc + delta, from
//   L2) into shared memory; SwiGLU GEMV over its rows -> global a; its first streamed down loads
//   are issued; grid barrier; a (the whole row, L2) into shared memory; down GEMV over the rows
//   in shared memory, then over the streamed ones -> y. Block 0 writes h and, after the barrier
//   (every block has read acc by then), the new residual acc.
// The GEMV pattern of both phases: thread t reads 16-byte chunk t (+ 384 j) of 8 rows at once
// (two steps of 8 loads in flight), multiplies it with the same chunk of the row vector in
// shared memory, and the block sums each row in a fixed order (warp butterfly, then warps in
// order): deterministic, no atomics on data.
#include <cuda_bf16.h>

#include <algorithm>
#include <stdexcept>

#include "kernels/cuda_check.h"
#include "kernels/gemv_device.cuh"
#include "kernels/hopper_ptx.cuh"
#include "kernels/mlp_block.h"
#include "kernels/pdl.cuh"
#include "kernels/persistent_gemv.cuh"
#include "kernels/persistent_launch.h"

namespace mlra::cuda {
namespace {

using namespace gemv_detail;
using namespace persistent;

constexpr int64_t kMaxD = 8192, kMaxF = 16384;

struct Params {
  const __nv_bfloat16* delta;
  float* acc;
  const __nv_bfloat16* ln2;
  float eps;
  const __nv_bfloat16* w12;
  int64_t w12_ld;
  const __nv_bfloat16* proj;
  int64_t proj_ld;
  __nv_bfloat16 *h, *a, *y;
  int d, f;
  int preload_rows;  // down rows per block copied into shared memory (its first ones)
  int part_stride;   // floats per warp in the partial-sum array
  int xs_elems;      // bf16 row vector in shared memory: max(d, F rounded up to 8)
  unsigned* barrier;
};

// Shared memory: [preload rows (preload_rows x proj_ld bf16) | acc + delta (d f32) | row vector
// (xs_elems bf16) | partial sums (kWarps x part_stride f32)], each part 16-byte aligned.
struct SmemLayout {
  size_t preload, xsum, xs, part, total;
};
__host__ __device__ inline SmemLayout smem_layout(int64_t preload_rows, int64_t proj_ld, int64_t d,
                                                  int64_t xs_elems, int64_t part_stride) {
  const auto up16 = [](size_t n) { return (n + 15) / 16 * 16; };
  SmemLayout l{};
  l.preload = 0;
  l.xsum = up16(size_t(preload_rows * proj_ld) * 2);
  l.xs = l.xsum + up16(size_t(d) * 4);
  l.part = l.xs + up16(size_t(xs_elems) * 2);
  l.total = l.part + size_t(kWarps * part_stride) * 4;
  return l;
}

// The sum of v over the block in a fixed order; every thread gets it. One use per kernel.
__device__ __forceinline__ float block_total(float v) {
  __shared__ float warp_sums[kWarps];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if ((threadIdx.x & 31) == 0) warp_sums[threadIdx.x >> 5] = v;
  __syncthreads();
  float total = 0.0f;
  for (int i = 0; i < kWarps; ++i) total += warp_sums[i];
  return total;
}

// acc + delta into xsum, its RMSNorm * ln2 (bf16, as add_rms_norm rounds) into xs; block 0
// also writes h.
__device__ __forceinline__ void norm_row(const Params& p, float* xsum, __nv_bfloat16* xs) {
  const int chunks = p.d / 8;
  float ss = 0.0f;
  for (int c = threadIdx.x; c < chunks; c += kThreads) {
    const float4 a0 = __ldcg(reinterpret_cast<const float4*>(p.acc) + 2 * c);
    const float4 a1 = __ldcg(reinterpret_cast<const float4*>(p.acc) + 2 * c + 1);
    float dv[8];
    unpack_bf16x8(__ldcg(reinterpret_cast<const uint4*>(p.delta) + c), dv);
    const float av[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const float x = av[j] + dv[j];
      xsum[8 * c + j] = x;
      ss += x * x;
    }
  }
  const float inv = rsqrtf(block_total(ss) / float(p.d) + p.eps);
  for (int c = threadIdx.x; c < chunks; c += kThreads) {
    float w[8], hv[8];
    unpack_bf16x8(__ldg(reinterpret_cast<const uint4*>(p.ln2) + c), w);
#pragma unroll
    for (int j = 0; j < 8; ++j) hv[j] = w[j] * (xsum[8 * c + j] * inv) * 1.0f;
    const uint4 packed = make_uint4(pack2(hv[0], hv[1]), pack2(hv[2], hv[3]), pack2(hv[4], hv[5]),
                                    pack2(hv[6], hv[7]));
    reinterpret_cast<uint4*>(xs)[c] = packed;
    if (blockIdx.x == 0) reinterpret_cast<uint4*>(p.h)[c] = packed;
  }
}

__global__ void __launch_bounds__(kThreads, 1) mlp_block_kernel(Params p) {
  extern __shared__ __align__(128) unsigned char smem[];
  __shared__ alignas(8) uint64_t preload_bar;
  const int b = blockIdx.x, G = gridDim.x;
  const SmemLayout lay = smem_layout(p.preload_rows, p.proj_ld, p.d, p.xs_elems, p.part_stride);
  const __nv_bfloat16* pre = reinterpret_cast<const __nv_bfloat16*>(smem + lay.preload);
  float* xsum = reinterpret_cast<float*>(smem + lay.xsum);
  __nv_bfloat16* xs = reinterpret_cast<__nv_bfloat16*>(smem + lay.xs);
  float* part = reinterpret_cast<float*>(smem + lay.part);

  const int o0 = share_begin(p.f, b, G), n_out = share_begin(p.f, b + 1, G) - o0;
  const int j0 = share_begin(p.d, b, G), n_down = share_begin(p.d, b + 1, G) - j0;
  const int n_pre = min(p.preload_rows, n_down);
  const uint32_t bar = smem_addr(&preload_bar);
  if (threadIdx.x == 0 && n_pre > 0) {  // weights never change: copy before pdl_wait()
    mbar_init(bar, 1);
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    const uint32_t bytes = uint32_t(n_pre * p.proj_ld * 2);
    mbar_expect_tx(bar, bytes);
    bulk_copy_g2s(smem_addr(pre), p.proj + int64_t(j0) * p.proj_ld, bytes, bar);
  }
  const RowWalk up{2 * n_out, p.d / 8, 0, (p.d / 8 + kThreads - 1) / kThreads};
  const auto load_up = [&](int i, int c) {  // row i: W1 (even) or W2 (odd) row of output o0+i/2
    const int64_t row = int64_t(i & 1) * p.f + o0 + (i >> 1);
    return load_weights(p.w12 + row * p.w12_ld + int64_t(c) * 8);
  };
  Step s0;
  if (up.steps() > 0) load_step(s0, up, 0, load_up);
  pdl_wait();

  norm_row(p, xsum, xs);
  __syncthreads();  // xs complete; the preload barrier's initialisation visible
  run_rows(s0, up, load_up, xs, part, p.part_stride, 0);
  __syncthreads();
  for (int k = threadIdx.x; k < n_out; k += kThreads) {
    float h1 = 0.0f, h2 = 0.0f;
    for (int w = 0; w < kWarps; ++w)
      h1 += part[w * p.part_stride + 2 * k], h2 += part[w * p.part_stride + 2 * k + 1];
    p.a[o0 + k] = __float2bfloat16(swiglu<__nv_bfloat16>(h1, h2));
  }

  // The down rows not in shared memory: their first loads go out before the barrier.
  const int chunks2 = (p.f + 7) / 8;
  const RowWalk down_pre{n_pre, chunks2, p.f % 8, (chunks2 + kThreads - 1) / kThreads};
  RowWalk down_stream = down_pre;
  down_stream.nrows = n_down - n_pre;
  const auto load_global = [&](int i, int c) {
    return load_weights(p.proj + int64_t(j0 + n_pre + i) * p.proj_ld + int64_t(c) * 8);
  };
  const auto load_shared = [&](int i, int c) {
    return *reinterpret_cast<const uint4*>(pre + int64_t(i) * p.proj_ld + int64_t(c) * 8);
  };
  if (down_stream.steps() > 0) load_step(s0, down_stream, 0, load_global);

  grid_barrier(p.barrier);
  pdl_launch_dependents();
  if (b == 0)  // every block read acc before the barrier
    for (int i = threadIdx.x; i < p.d; i += kThreads) p.acc[i] = xsum[i];
  for (int c = threadIdx.x; c < chunks2; c += kThreads) {  // a: written by other blocks, via L2
    uint4 v = __ldcg(reinterpret_cast<const uint4*>(p.a) + c);
    if (p.f % 8 != 0 && c == chunks2 - 1) v = keep_bf16(v, p.f % 8);
    reinterpret_cast<uint4*>(xs)[c] = v;
  }
  __syncthreads();
  if (n_pre > 0) {
    mbar_wait(bar, 0);
    Step sp;
    load_step(sp, down_pre, 0, load_shared);
    run_rows(sp, down_pre, load_shared, xs, part, p.part_stride, 0);
  }
  if (down_stream.steps() > 0)
    run_rows(s0, down_stream, load_global, xs, part, p.part_stride, n_pre);
  __syncthreads();
  for (int i = threadIdx.x; i < n_down; i += kThreads) {
    float v = 0.0f;
    for (int w = 0; w < kWarps; ++w) v += part[w * p.part_stride + i];
    p.y[j0 + i] = __float2bfloat16(v);
  }
}

bool aligned16(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15u) == 0;
}

}  // namespace

MlpBlockKernel::MlpBlockKernel(int device) : device_(device) {
  MLRA_CUDA_CHECK(cudaSetDevice(device));
  int coop = 0, optin = 0;
  MLRA_CUDA_CHECK(cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, device));
  if (!coop) throw std::runtime_error("mlp_block: the device has no cooperative launch");
  MLRA_CUDA_CHECK(cudaDeviceGetAttribute(&sms_, cudaDevAttrMultiProcessorCount, device));
  MLRA_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  cudaFuncAttributes fa{};
  MLRA_CUDA_CHECK(cudaFuncGetAttributes(&fa, mlp_block_kernel));
  max_smem_ = size_t(optin) - fa.sharedSizeBytes;
  MLRA_CUDA_CHECK(cudaFuncSetAttribute(
      mlp_block_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(max_smem_)));
  MLRA_CUDA_CHECK(cudaMalloc(&barrier_, 2 * sizeof(unsigned)));
  MLRA_CUDA_CHECK(cudaMemset(barrier_, 0, 2 * sizeof(unsigned)));
  pdl_ = cooperative_launch_works(true, false) && cooperative_launch_works(true, true);
  capturable_ = pdl_ || cooperative_launch_works(false, true);
}

MlpBlockKernel::~MlpBlockKernel() {
  cudaSetDevice(device_);
  cudaFree(barrier_);  // synchronizes: no launch still uses the words
}

bool MlpBlockKernel::supports(const MlpBlockOperands& o) const {
  const int64_t d = o.acc.cols, f = o.a.cols;
  const auto bf16_row = [](const MatView& v) {
    return v.dtype == DType::kBF16 && v.rows == 1 && aligned16(v.data);
  };
  if (d < 8 || d % 8 != 0 || d > kMaxD || f < 1 || f > kMaxF) return false;
  if (o.acc.dtype != DType::kF32 || o.acc.rows != 1 || !aligned16(o.acc.data)) return false;
  if (!bf16_row(o.delta) || !bf16_row(o.h) || !bf16_row(o.a) || o.y.dtype != DType::kBF16)
    return false;
  if (o.delta.cols != d || o.h.cols != d || o.y.rows != 1 || o.y.cols != d || o.a.ld % 8 != 0)
    return false;
  if (o.ln2_dtype != DType::kBF16 || !aligned16(o.ln2)) return false;
  if (o.w12.dtype != DType::kBF16 || o.w12.rows != 2 * f || o.w12.cols != d || o.w12.ld % 8 != 0 ||
      !aligned16(o.w12.data))
    return false;
  if (o.proj.dtype != DType::kBF16 || o.proj.rows != d || o.proj.cols != f || o.proj.ld % 8 != 0 ||
      !aligned16(o.proj.data))
    return false;
  // a is written before the barrier and read after it by every block, h written by block 0: no
  // overlap with each other, the inputs or y; y may alias delta (read before the barrier, written
  // after it).
  const void* ins[] = {o.delta.data, o.acc.data, o.y.data};
  for (const void* p : ins)
    if (p == o.h.data || p == o.a.data) return false;
  return o.h.data != o.a.data;
}

bool MlpBlockKernel::runs_on(cudaStream_t stream) const {
  if (capturable_) return true;
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  MLRA_CUDA_CHECK(cudaStreamIsCapturing(stream, &status));
  return status == cudaStreamCaptureStatusNone;
}

MlpBlockKernel::Shape MlpBlockKernel::shape_for(int64_t d, int64_t f, int64_t proj_ld) {
  const int64_t xs_elems = std::max(d, (f + 7) / 8 * 8);
  const auto layout = [&](int grid, int64_t preload_rows) {
    const int64_t per_block = std::max(2 * ((f + grid - 1) / grid), (d + grid - 1) / grid);
    return smem_layout(preload_rows, proj_ld, d, xs_elems, per_block);
  };
  // As many of a block's down rows in shared memory as fit, at one block per SM first; where
  // that leaves room for more blocks per SM (small shares), the grid grows and shares shrink.
  const auto fit = [&](int grid) {
    Shape s;
    s.grid = grid;
    const int64_t rows = (d + grid - 1) / grid, base = int64_t(layout(grid, 0).total);
    const int64_t row_bytes = (proj_ld * 2 + 15) / 16 * 16;
    s.preload_rows = int(std::clamp<int64_t>(
        (int64_t(max_smem_) - base) / std::max<int64_t>(row_bytes, 1), 0, rows));
    s.smem = layout(grid, s.preload_rows).total;
    return s;
  };
  Shape s = fit(sms_);
  if (s.smem > max_smem_) return Shape{};
  auto per_sm = blocks_per_sm_.find(s.smem);
  if (per_sm == blocks_per_sm_.end()) {
    int n = 0;
    MLRA_CUDA_CHECK(
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, mlp_block_kernel, kThreads, s.smem));
    per_sm = blocks_per_sm_.emplace(s.smem, n).first;
  }
  if (per_sm->second < 1) return Shape{};
  if (per_sm->second > 1) s = fit(sms_ * per_sm->second);  // smaller shares: fits as well
  return s;
}

void MlpBlockKernel::launch(const MlpBlockOperands& o, cudaStream_t stream) {
  MLRA_REQUIRE(supports(o),
               "mlp_block: unsupported operands (one row, bf16 rows 16-byte aligned, "
               "f32 acc, d % 8 == 0, d <= 8192, F <= 16384)");
  const Shape s = shape_for(o.acc.cols, o.a.cols, o.proj.ld);
  MLRA_REQUIRE(s.grid > 0, "mlp_block: the shape does not fit one resident grid");
  Params p{};
  p.delta = static_cast<const __nv_bfloat16*>(o.delta.data);
  p.acc = static_cast<float*>(o.acc.data);
  p.ln2 = static_cast<const __nv_bfloat16*>(o.ln2);
  p.eps = o.eps;
  p.w12 = static_cast<const __nv_bfloat16*>(o.w12.data);
  p.w12_ld = o.w12.ld;
  p.proj = static_cast<const __nv_bfloat16*>(o.proj.data);
  p.proj_ld = o.proj.ld;
  p.h = static_cast<__nv_bfloat16*>(o.h.data);
  p.a = static_cast<__nv_bfloat16*>(o.a.data);
  p.y = static_cast<__nv_bfloat16*>(o.y.data);
  p.d = int(o.acc.cols);
  p.f = int(o.a.cols);
  p.preload_rows = s.preload_rows;
  p.part_stride =
      int(std::max(2 * ((o.a.cols + s.grid - 1) / s.grid), (o.acc.cols + s.grid - 1) / s.grid));
  p.xs_elems = int(std::max(o.acc.cols, (o.a.cols + 7) / 8 * 8));
  p.barrier = barrier_;
  cudaLaunchAttribute attr[2];
  const cudaLaunchConfig_t cfg =
      cooperative_launch_config(dim3(unsigned(s.grid)), dim3(kThreads), s.smem, stream, attr, pdl_);
  MLRA_CUDA_CHECK(cudaLaunchKernelEx(&cfg, mlp_block_kernel, p));
}

}  // namespace mlra::cuda
