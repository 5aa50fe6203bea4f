// Small-M GEMV on tensor cores: y = alpha * x . w^T + beta * y for x [M <= 8, K] bf16 and
// w [N, K] bf16 (nn.Linear layout), f32 accumulation, and the SwiGLU form over [W1; W2]. The f32
// FMA kernel (gemv.cu) spends M multiply-adds per weight and falls behind the memory from M = 2;
// here one mma.m16n8k16 takes 16 weight rows as its A operand and the M rows of x as the n = 8
// columns of B (columns past M are zero), so the weights stream from HBM once, with 16-byte loads,
// for any M <= 8 at the same instruction count.
// The trick that keeps every load 16 bytes wide: the MMA sums over k, so any permutation of k
// applied to both operands gives the same result. Lane (g, t) (g = lane / 4, t = lane % 4) loads
// 8 consecutive k (8t .. 8t + 7 of a 32-k block) of weight rows g and g + 8 and of x row g; their
// 4-byte pairs are exactly its A and B fragments of two k16 MMAs under the permutation
//   logical k {2t, 2t+1} -> 8t + 4s + {0, 1},  logical k {2t+8, 2t+9} -> 8t + 4s + {2, 3}
// (s = 0, 1 the MMA). The warps of a block split K (double-buffered 16-byte loads, kBlocks 32-k
// blocks per stage) and add their 16 x 8 tiles in shared memory: deterministic, no atomics, one
// launch. The main loop covers the whole 8-k chunks; a K tail (K % 8 != 0) is one more MMA pair
// of the last warp after it, in which only the lanes of the tail chunk carry values, zeroed past K
// in both operands (keep_bf16).
#include <cuda_bf16.h>

#include <algorithm>
#include <climits>
#include <cstdint>

#include "kernels/cuda_check.h"
#include "kernels/gemv.h"
#include "kernels/gemv_device.cuh"
#include "kernels/hopper_ptx.cuh"
#include "kernels/pdl.cuh"

namespace mlra::cuda {
namespace {

using namespace gemv_detail;

constexpr int kBlocks = 4;     // 32-k blocks per stage: 8 weight loads of 16 B in flight per lane
constexpr int kMaxWarps = 16;  // warps of a block, splitting K

// One stage: weight rows a and b (each 8 k per lane per 32-k block) of blocks kb .. kb + kBlocks.
struct Stage {
  uint4 a[kBlocks], b[kBlocks];
};

__device__ __forceinline__ void load_stage(Stage& s, const __nv_bfloat16* wa,
                                           const __nv_bfloat16* wb, int kb, int k_end, int k_lane) {
#pragma unroll
  for (int u = 0; u < kBlocks; ++u) {
    const int k = (kb + u) * 32 + k_lane;  // k_end % 8 == 0: a lane's 8 k are all in or all out
    const bool in = k < k_end;
    s.a[u] = in ? load_stream(wa + (kb + u) * 32) : make_uint4(0, 0, 0, 0);
    s.b[u] = in ? load_stream(wb + (kb + u) * 32) : make_uint4(0, 0, 0, 0);
  }
}

// c += the stage's weights . x (x row g of this lane; zero rows past M).
__device__ __forceinline__ void mma_stage(float (&c)[4], const Stage& s, const __nv_bfloat16* xrow,
                                          bool has_x, int kb, int k_end, int k_lane) {
#pragma unroll
  for (int u = 0; u < kBlocks; ++u) {
    const int k = (kb + u) * 32 + k_lane;
    const uint4 xv = has_x && k < k_end
                         ? __ldg(reinterpret_cast<const uint4*>(xrow + (kb + u) * 32))
                         : make_uint4(0, 0, 0, 0);
    const uint32_t a0[4] = {s.a[u].x, s.b[u].x, s.a[u].y, s.b[u].y};
    const uint32_t a1[4] = {s.a[u].z, s.b[u].z, s.a[u].w, s.b[u].w};
    mma_bf16(c, a0, xv.x, xv.y);
    mma_bf16(c, a1, xv.z, xv.w);
  }
}

// grid (tiles, batch), blockDim.x = 32 * warps. Plain: tile i covers output rows 16i .. 16i + 15
// (A rows g -> 16i + g, g + 8 -> 16i + 8 + g). kGlu (p.n = F, w = [W1; W2]): tile i covers
// outputs 8i .. 8i + 7, A row g is W1 row 8i + g and A row g + 8 the W2 row F + 8i + g, so a
// lane holds both halves of its outputs. Rows past the end re-read the last row (never stored).
template <class YT, bool kGlu>
__global__ void __launch_bounds__(kMaxWarps * 32) gemv_mma_kernel(GemvParams p, int m_rows) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  const int g = lane >> 2, t = lane & 3, k_lane = 8 * t;
  const int64_t b = blockIdx.y;
  const int n0 = int(blockIdx.x) * (kGlu ? 8 : 16);
  const int ra = min(n0 + g, p.n - 1);
  const int rb = kGlu ? p.n + ra : min(n0 + 8 + g, p.n - 1);
  const __nv_bfloat16* w = p.w + b * p.w_stride + k_lane;
  const __nv_bfloat16* wa = w + int64_t(ra) * p.w_ld;
  const __nv_bfloat16* wb = w + int64_t(rb) * p.w_ld;
  const __nv_bfloat16* xrow =
      static_cast<const __nv_bfloat16*>(p.x) + b * p.x_stride + int64_t(g) * p.x_ld + k_lane;
  const bool has_x = g < m_rows;
  const int k_full = p.k & ~7, tail = p.k & 7;  // whole 8-k chunks below k_full
  const int nkb = (k_full + 31) / 32, step = warps * kBlocks;

  float c[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  Stage s0, s1;
  int kb = warp * kBlocks;
  pdl_wait();  // every operand may be an earlier op's output; y may be read by it
  if (kb < nkb) load_stage(s0, wa, wb, kb, k_full, k_lane);
  // Two stages in flight: the next one's loads are issued before this one's MMAs wait for it.
  while (kb < nkb) {
    if (kb + step < nkb) load_stage(s1, wa, wb, kb + step, k_full, k_lane);
    mma_stage(c, s0, xrow, has_x, kb, k_full, k_lane);
    kb += step;
    if (kb >= nkb) break;
    if (kb + step < nkb) load_stage(s0, wa, wb, kb + step, k_full, k_lane);
    mma_stage(c, s1, xrow, has_x, kb, k_full, k_lane);
    kb += step;
  }
  if (tail != 0 && warp == warps - 1) {  // warp-uniform: every lane joins the MMAs
    const int base = k_full & ~31;       // the tail chunk's 32-k block; lane t = (k_full % 32) / 8
    const bool in = k_lane == (k_full & 31);
    const uint4 zero = make_uint4(0, 0, 0, 0);
    const uint4 a = in ? keep_bf16(load_stream(wa + base), tail) : zero;
    const uint4 bw = in ? keep_bf16(load_stream(wb + base), tail) : zero;
    const uint4 xv =
        in && has_x ? keep_bf16(__ldg(reinterpret_cast<const uint4*>(xrow + base)), tail) : zero;
    const uint32_t a0[4] = {a.x, bw.x, a.y, bw.y};
    const uint32_t a1[4] = {a.z, bw.z, a.w, bw.w};
    mma_bf16(c, a0, xv.x, xv.y);
    mma_bf16(c, a1, xv.z, xv.w);
  }
  pdl_launch_dependents();  // every weight load is done: the next kernel may start launching

  // c[j]: A row g + 8 (j >> 1), x row 2t + (j & 1). Per warp [j][lane], lanes contiguous.
  __shared__ float part[kMaxWarps][4][32];
#pragma unroll
  for (int j = 0; j < 4; ++j) part[warp][j][lane] = c[j];
  __syncthreads();
  YT* y = static_cast<YT*>(p.y) + b * p.y_stride;
  if constexpr (kGlu) {
    for (int i = threadIdx.x; i < 64; i += blockDim.x) {
      const int j = i >> 5, l = i & 31;
      float h1 = 0.0f, h2 = 0.0f;
      for (int v = 0; v < warps; ++v) h1 += part[v][j][l], h2 += part[v][j + 2][l];
      const int m = 2 * (l & 3) + j, n = n0 + (l >> 2);
      if (m < m_rows && n < p.n) store_y(y + m * p.y_ld + n, swiglu<YT>(h1, h2), 1.0f, 0.0f);
    }
  } else {
    for (int i = threadIdx.x; i < 128; i += blockDim.x) {
      const int j = i >> 5, l = i & 31;
      float v = 0.0f;
      for (int u = 0; u < warps; ++u) v += part[u][j][l];
      const int m = 2 * (l & 3) + (j & 1), n = n0 + (l >> 2) + 8 * (j >> 1);
      if (m < m_rows && n < p.n) store_y(y + m * p.y_ld + n, v, p.alpha, p.beta);
    }
  }
}

// Warps per block: the most (up to 16) that keep every block resident at once (one wave: all
// blocks stream side by side and finish together) while each warp still gets a whole stage of K;
// where even 4-warp blocks exceed one wave, 4 warps and several waves.
template <class YT, bool kGlu>
void launch_typed(const GemvParams& p, int m_rows, int64_t batch, cudaStream_t stream) {
  const auto kernel = gemv_mma_kernel<YT, kGlu>;
  static const int per_sm[3] = {resident_blocks(kernel, 128), resident_blocks(kernel, 256),
                                resident_blocks(kernel, 512)};
  const int64_t tiles = (int64_t(p.n) + (kGlu ? 7 : 15)) / (kGlu ? 8 : 16);
  const int64_t blocks = tiles * batch, sms = sm_count();
  const int nkb = ((p.k & ~7) + 31) / 32;  // 32-k blocks of the main loop (the tail is extra)
  int warps = 4;
  for (int i = 2; i >= 0; --i) {
    const int wi = 4 << i;
    if (blocks <= int64_t(per_sm[i]) * sms && nkb >= wi * kBlocks) {
      warps = wi;
      break;
    }
  }
  while (warps > 1 && nkb < warps * kBlocks) warps /= 2;  // short K: no idle warps
  launch_pdl(kernel, dim3(unsigned(tiles), unsigned(batch)), dim3(unsigned(32 * warps)), 0, stream,
             p, m_rows);
}

template <bool kGlu>
void launch_y(const GemvParams& p, DType yt, int m_rows, int64_t batch, cudaStream_t stream) {
  if (yt == DType::kBF16) return launch_typed<__nv_bfloat16, kGlu>(p, m_rows, batch, stream);
  if constexpr (!kGlu) return launch_typed<float, false>(p, m_rows, batch, stream);
  MLRA_REQUIRE(false, "gemv_mma: the SwiGLU form writes bf16");
}

}  // namespace

void launch_gemv_mma(const MatView& x, int64_t x_stride, const MatView& w, int64_t w_stride,
                     const MatView& y, int64_t y_stride, int64_t batch, float alpha, float beta,
                     cudaStream_t stream) {
  MLRA_REQUIRE(x.cols == w.cols && y.rows == x.rows && y.cols == w.rows, "gemv_mma: shapes");
  MLRA_REQUIRE(gemv_mma_supports(x, x_stride, w, w_stride, true, y, y_stride, batch),
               "gemv_mma: unsupported operands (bf16 x of 1..8 rows, w [N, K] bf16, 16-byte "
               "aligned rows)");
  GemvParams p = gemv_params(x, x_stride, w, w_stride, y, y_stride, w.rows, w.cols, alpha, beta);
  launch_y<false>(p, y.dtype, int(x.rows), batch, stream);
}

void launch_gemv_mma_swiglu(const MatView& x, const MatView& w12, const MatView& y,
                            cudaStream_t stream) {
  MLRA_REQUIRE(gemv_swiglu_supports(x, w12, y),
               "gemv_mma swiglu: needs bf16 x and y, w12 [2F, K] as for launch_gemv, y [M, F]");
  const int64_t f = w12.rows / 2;
  GemvParams p = gemv_params(x, 0, w12, 0, y, 0, f, w12.cols, 1.0f, 0.0f);
  launch_y<true>(p, y.dtype, int(x.rows), 1, stream);
}

}  // namespace mlra::cuda
