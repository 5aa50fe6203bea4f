// Small-M GEMV on tensor cores for 2..8 rows of x over bf16 weights w [N, K] (nn.Linear layout):
// y = alpha * x . w^T + beta * y. The FMA kernels (gemv.cu) spend M multiply-adds per weight
// element on the CUDA cores and fall behind the memory for M >= 2; here one mma.m16n8k16 per
// 16 k takes x's M rows as its M (rows 8..15 and those past M are zero) and 8 weight rows as its
// N, so the weights still stream from HBM once, with 16-byte loads.
// The trick that keeps every load 16 bytes wide: the MMA sums over k, so any permutation of k
// applied to both operands gives the same result. Lane (g, t) of a warp (g = lane / 4, t =
// lane % 4) loads 8 consecutive k of weight row n0 + g and the same 8 k of x row g; their halves
// are exactly its B and A fragments for two k16 steps under the permutation
//   logical k {2t, 2t+1} -> 8t + 4s + {0, 1},  logical k {2t+8, 2t+9} -> 8t + 4s + {2, 3}
// (s = 0, 1 the step). A warp thus covers 32 k of 8 rows per pair of MMAs; the warps of a
// block split K and add their 8x8 partial tiles in shared memory (deterministic, no atomics).
// An f32 x is rounded to bf16 on load (as the cuBLAS path does); accumulation is f32.
#include <cuda_bf16.h>

#include <climits>
#include <cstdlib>
#include <string>

#include "kernels/cuda_check.h"
#include "kernels/env_switch.h"
#include "kernels/gemv.h"
#include "kernels/gemv_device.cuh"
#include "kernels/hopper_ptx.cuh"

namespace mlra::cuda {
namespace {

using namespace gemv_detail;

// Warps per block, splitting K. A block owns 8 output rows: with N = 3072 (384 blocks) 4 warps
// left the HBM idle (34% of copy bandwidth at K 9880 on an H200, 72% with 16 warps), while for
// N >= 8192 the 16-warp split leaves each warp too few k blocks (fc12 64% vs 72%, lm_head 80%
// vs 88%).
constexpr int kWideN = 8192;
constexpr int kUnroll = 8;  // 32-k blocks in flight per warp (8 x 16 B per lane)

// 8 consecutive x values of one row as 4 packed bf16 pairs (low half = lower k).
__device__ __forceinline__ uint4 load_x_pairs(const __nv_bfloat16* p) {
  return __ldg(reinterpret_cast<const uint4*>(p));
}
__device__ __forceinline__ uint4 load_x_pairs(const float* p) {
  const float4 a = __ldg(reinterpret_cast<const float4*>(p));
  const float4 b = __ldg(reinterpret_cast<const float4*>(p) + 1);
  return make_uint4(pack_bf16(a.x, a.y), pack_bf16(a.z, a.w), pack_bf16(b.x, b.y),
                    pack_bf16(b.z, b.w));
}

// grid (ceil(N / 8), batch), kMmaWarps warps: block i owns output rows 8i .. 8i + 7.
template <int kMmaWarps, class XT, class YT>
__global__ void __launch_bounds__(kMmaWarps * 32) gemv_mma_kernel(GemvParams p, int m_rows) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int64_t b = blockIdx.y;
  const int n0 = int(blockIdx.x) * 8;
  // Rows past N re-read row N - 1 (never stored); x rows past M load zeros.
  const __nv_bfloat16* wrow = p.w + b * p.w_stride + int64_t(min(n0 + g, p.n - 1)) * p.w_ld;
  const XT* xrow = static_cast<const XT*>(p.x) + b * p.x_stride + int64_t(g) * p.x_ld;
  const bool has_x = g < m_rows;
  const int blocks32 = (p.k + 31) / 32;

  float c[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  for (int kb0 = warp; kb0 < blocks32; kb0 += kMmaWarps * kUnroll) {
    uint4 wv[kUnroll], xv[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int k = (kb0 + u * kMmaWarps) * 32 + 8 * t;  // K % 8 == 0: a chunk is all in or out
      const bool in = k < p.k;
      wv[u] = in ? load_stream(wrow + k) : make_uint4(0, 0, 0, 0);
      xv[u] = in && has_x ? load_x_pairs(xrow + k) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      // A = {row g: logical 2t.., row g+8: 0, row g: logical 2t+8.., row g+8: 0}, B = {.., ..}.
      const uint32_t a0[4] = {xv[u].x, 0u, xv[u].y, 0u};
      const uint32_t a1[4] = {xv[u].z, 0u, xv[u].w, 0u};
      mma_bf16(c, a0, wv[u].x, wv[u].y);
      mma_bf16(c, a1, wv[u].z, wv[u].w);
    }
  }

  // c[0], c[1]: x row g, output rows n0 + 2t, n0 + 2t + 1 (c[2], c[3] are the zero rows 8..15).
  __shared__ float part[kMmaWarps][8][8];
  part[warp][g][2 * t] = c[0];
  part[warp][g][2 * t + 1] = c[1];
  __syncthreads();
  if (threadIdx.x < 64) {
    const int m = threadIdx.x / 8, col = threadIdx.x % 8;
    if (m < m_rows && n0 + col < p.n) {
      float v = 0.0f;
#pragma unroll
      for (int i = 0; i < kMmaWarps; ++i) v += part[i][m][col];
      YT* y = static_cast<YT*>(p.y) + b * p.y_stride;
      store_y(y + int64_t(m) * p.y_ld + n0 + col, v, p.alpha, p.beta);
    }
  }
}

template <class XT, class YT>
void launch_typed(const GemvParams& p, int m_rows, int64_t batch, cudaStream_t stream) {
  const dim3 grid(unsigned((p.n + 7) / 8), unsigned(batch));
  if (p.n >= kWideN)
    gemv_mma_kernel<4, XT, YT><<<grid, 4 * 32, 0, stream>>>(p, m_rows);
  else
    gemv_mma_kernel<16, XT, YT><<<grid, 16 * 32, 0, stream>>>(p, m_rows);
  MLRA_CUDA_LAUNCH_CHECK();
}

}  // namespace

bool gemv_mma_enabled() {
  // Opt-in until measured on a GPU (written in a session without one): MLRA_GEMV_MMA=1.
  static const bool on = env_value("MLRA_GEMV_MMA") == "1";
  return on;
}

bool gemv_mma_supports(const MatView& x, int64_t x_stride, const MatView& w, int64_t w_stride,
                       bool w_out_by_in, const MatView& y, int64_t y_stride, int64_t batch) {
  return w_out_by_in && w.rows <= INT_MAX - 8 &&
         gemv_supports(x, x_stride, w, w_stride, w_out_by_in, y, y_stride, batch);
}

void launch_gemv_mma(const MatView& x, int64_t x_stride, const MatView& w, int64_t w_stride,
                     const MatView& y, int64_t y_stride, int64_t batch, float alpha, float beta,
                     cudaStream_t stream) {
  MLRA_REQUIRE(x.cols == w.cols && y.rows == x.rows && y.cols == w.rows, "gemv_mma: shapes");
  MLRA_REQUIRE(gemv_mma_supports(x, x_stride, w, w_stride, true, y, y_stride, batch),
               "gemv_mma: unsupported operands (w [N, K] bf16, rows 1..8, K % 8 == 0, 16-byte "
               "aligned rows)");
  const GemvParams p =
      gemv_params(x, x_stride, w, w_stride, y, y_stride, w.rows, w.cols, alpha, beta);
  using BF = __nv_bfloat16;
  const int m = int(x.rows);
  const bool xb = x.dtype == DType::kBF16, yb = y.dtype == DType::kBF16;
  if (xb && yb) return launch_typed<BF, BF>(p, m, batch, stream);
  if (xb) return launch_typed<BF, float>(p, m, batch, stream);
  if (yb) return launch_typed<float, BF>(p, m, batch, stream);
  return launch_typed<float, float>(p, m, batch, stream);
}

}  // namespace mlra::cuda
