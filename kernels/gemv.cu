// Small-M GEMV (M <= 8) over bf16 weights, f32 accumulation: memory-bound, so every weight byte
// is read once with 16-byte loads, 8 of them in flight per thread, while x (a few KB) stays in
// L1/L2. Each block owns whole outputs: a K split across warps of a block is summed in shared
// memory, never by a second kernel or atomics, so results are deterministic and graph capturable.
// Two layouts: out_by_in (w [N, K], k contiguous: a thread group per row) and in_by_out
// (w [K, N], n contiguous: a thread per 8 columns walking k). The SwiGLU form of out_by_in gives
// a thread the rows n and F + n of [W1; W2] and stores silu(a) * b. Launched with PDL (pdl.cuh).
#include <cuda_bf16.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <climits>
#include <cstdint>
#include <type_traits>

#include "kernels/cuda_check.h"
#include "kernels/gemv.h"
#include "kernels/gemv_device.cuh"
#include "kernels/pdl.cuh"

namespace mlra::cuda {
namespace {

using namespace gemv_detail;

// x[0..8) as f32; p is 16-byte aligned.
__device__ __forceinline__ void load_x8(const __nv_bfloat16* p, float (&f)[8]) {
  unpack_bf16x8(__ldg(reinterpret_cast<const uint4*>(p)), f);
}
__device__ __forceinline__ void load_x8(const float* p, float (&f)[8]) {
  const float4 a = __ldg(reinterpret_cast<const float4*>(p));
  const float4 b = __ldg(reinterpret_cast<const float4*>(p) + 1);
  f[0] = a.x, f[1] = a.y, f[2] = a.z, f[3] = a.w;
  f[4] = b.x, f[5] = b.y, f[6] = b.z, f[7] = b.w;
}

// x[0..valid) of a K-tail chunk (valid 1..7), zeros after: only the 16-byte units that hold
// elements below K are read (f32: the second unit only for valid > 4), so no read leaves the row.
__device__ __forceinline__ void load_x8_tail(const __nv_bfloat16* p, int valid, float (&f)[8]) {
  unpack_bf16x8(keep_bf16(__ldg(reinterpret_cast<const uint4*>(p)), valid), f);
}
__device__ __forceinline__ void load_x8_tail(const float* p, int valid, float (&f)[8]) {
  const float4 a = __ldg(reinterpret_cast<const float4*>(p));
  const float4 b = valid > 4 ? __ldg(reinterpret_cast<const float4*>(p) + 1) : float4{};
  const float v[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
#pragma unroll
  for (int j = 0; j < 8; ++j) f[j] = j < valid ? v[j] : 0.0f;
}

constexpr int kRowBlock = 128;  // threads per out_by_in block
constexpr int kColBlock = 256;  // threads per in_by_out block
constexpr int kColWarps = kColBlock / 32;

// w [N, K]. A group of tpr = 2^tpr_log2 threads (4..128) owns R rows; thread kl of the group
// reads 16-byte chunks kl, kl + tpr, ... of each row (R * U loads in flight) and multiplies them
// with the M rows of x. A K tail (K % 8 != 0) is one more chunk after the main loop, taken by one
// thread of the group with x and w zeroed past K (keep_bf16). Groups of up to 32 threads sum by
// shuffles; wider groups (whole warps) add their warp sums in shared memory. Plain: the R rows are
// outputs n_first + r (p.n = N). kGlu: w is [W1; W2] ([2F, K], p.n = F), rows r < R/2 are W1 rows
// n_first + r and rows r >= R/2 the W2 rows F + n_first + r - R/2; output n_first + r = silu(y1) *
// y2 (alpha 1, beta 0).
template <int M, int R, class XT, class YT, bool kGlu>
__global__ void __launch_bounds__(kRowBlock) gemv_out_by_in_kernel(GemvParams p, int tpr_log2) {
  constexpr int U = 8 / R, kOut = kGlu ? R / 2 : R;  // outputs per group
  const int tpr = 1 << tpr_log2, slots = kRowBlock >> tpr_log2;
  const int kl = threadIdx.x & (tpr - 1), slot = threadIdx.x >> tpr_log2;
  const int64_t b = blockIdx.y;
  const int n_first = (int(blockIdx.x) * slots + slot) * kOut;
  const XT* x = static_cast<const XT*>(p.x) + b * p.x_stride;
  const __nv_bfloat16* w = p.w + b * p.w_stride;
  const __nv_bfloat16* wrow[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {  // rows past N re-read row N-1; their sums are never stored
    const int o = r % kOut, half = r / kOut;  // half 1: the W2 row of output o
    wrow[r] = w + (int64_t(half) * p.n + min(n_first + o, p.n - 1)) * p.w_ld;
  }
  const int chunks = p.k / 8, tail = p.k % 8;  // whole chunks; the tail chunk is `chunks`
  pdl_wait();

  float acc[M][R] = {};
  for (int c0 = kl; c0 < chunks; c0 += tpr * U) {
    uint4 wv[U][R];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int c = c0 + u * tpr;
#pragma unroll
      for (int r = 0; r < R; ++r)
        wv[u][r] = c < chunks ? load_stream(wrow[r] + c * 8) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int c = c0 + u * tpr;
      if (c >= chunks) break;
      float wf[R][8];
#pragma unroll
      for (int r = 0; r < R; ++r) unpack_bf16x8(wv[u][r], wf[r]);
#pragma unroll
      for (int m = 0; m < M; ++m) {
        float xf[8];
        load_x8(x + m * p.x_ld + c * 8, xf);
#pragma unroll
        for (int r = 0; r < R; ++r)
#pragma unroll
          for (int j = 0; j < 8; ++j) acc[m][r] = fmaf(xf[j], wf[r][j], acc[m][r]);
      }
    }
  }

  if (tail != 0 && kl == (chunks & (tpr - 1))) {
    float wf[R][8];
#pragma unroll
    for (int r = 0; r < R; ++r)
      unpack_bf16x8(keep_bf16(load_stream(wrow[r] + chunks * 8), tail), wf[r]);
#pragma unroll
    for (int m = 0; m < M; ++m) {
      float xf[8];
      load_x8_tail(x + m * p.x_ld + chunks * 8, tail, xf);
#pragma unroll
      for (int r = 0; r < R; ++r)
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[m][r] = fmaf(xf[j], wf[r][j], acc[m][r]);
    }
  }

  pdl_launch_dependents();  // every weight load is issued: the next kernel may start launching
  const int lanes = min(tpr, 32);
#pragma unroll
  for (int m = 0; m < M; ++m)
#pragma unroll
    for (int r = 0; r < R; ++r)
      for (int off = lanes / 2; off > 0; off >>= 1)
        acc[m][r] += __shfl_xor_sync(0xffffffffu, acc[m][r], off);

  YT* y = static_cast<YT*>(p.y) + b * p.y_stride;
  if (tpr <= 32) {  // uniform over the block: no barrier below is skipped by some threads only
    // Output e = m * kOut + r is stored by lane e % tpr of the group (all lanes hold the sums).
#pragma unroll
    for (int m = 0; m < M; ++m)
#pragma unroll
      for (int r = 0; r < kOut; ++r)
        if (((m * kOut + r) & (tpr - 1)) == kl && n_first + r < p.n) {
          if constexpr (kGlu)
            store_y(y + m * p.y_ld + n_first + r, swiglu<YT>(acc[m][r], acc[m][r + kOut]), 1.0f,
                    0.0f);
          else
            store_y(y + m * p.y_ld + n_first + r, acc[m][r], p.alpha, p.beta);
        }
    return;
  }
  __shared__ float part[kRowBlock / 32][M * R];  // per warp: its sum of every row
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
#pragma unroll
  for (int m = 0; m < M; ++m)
#pragma unroll
    for (int r = 0; r < R; ++r)
      if (m * R + r == lane) part[warp][m * R + r] = acc[m][r];
  __syncthreads();
  const int warps_per_slot = tpr >> 5, t = threadIdx.x;
  if (t < slots * M * kOut) {
    const int s = t / (M * kOut), e = t % (M * kOut), m = e / kOut, o = e % kOut;
    float v = 0.0f, v2 = 0.0f;
    for (int i = 0; i < warps_per_slot; ++i) {
      v += part[s * warps_per_slot + i][m * R + o];
      if constexpr (kGlu) v2 += part[s * warps_per_slot + i][m * R + o + kOut];
    }
    const int n = (int(blockIdx.x) * slots + s) * kOut + o;
    if (n < p.n) {
      if constexpr (kGlu)
        store_y(y + m * p.y_ld + n, swiglu<YT>(v, v2), 1.0f, 0.0f);
      else
        store_y(y + m * p.y_ld + n, v, p.alpha, p.beta);
    }
  }
}

// 8 weights w[0..8) of one k row, zero past `valid` columns (the ragged end of N).
__device__ __forceinline__ uint4 load_cols(const __nv_bfloat16* p, int valid) {
  if (valid >= 8) return load_stream(p);
  uint16_t h[8];
  const uint16_t* q = reinterpret_cast<const uint16_t*>(p);
#pragma unroll
  for (int j = 0; j < 8; ++j) h[j] = j < valid ? q[j] : uint16_t(0);
  return make_uint4(h[0] | uint32_t(h[1]) << 16, h[2] | uint32_t(h[3]) << 16,
                    h[4] | uint32_t(h[5]) << 16, h[6] | uint32_t(h[7]) << 16);
}

// w [K, N]. Thread (ks, ct) of a block owns the 8 columns col0 + 8 ct .. + 8 and walks
// k = ks, ks + k_slices, ... (U rows in flight); x[m][k] is a broadcast load. The k slices
// sharing a warp sum by shuffles, the 8 warps in shared memory, one x row at a time.
template <int M, class XT, class YT>
__global__ void __launch_bounds__(kColBlock) gemv_in_by_out_kernel(GemvParams p, int ct_log2) {
  constexpr int U = 4;
  pdl_wait();  // launched with PDL: x is the previous kernel's output, y may be read by it
  const int col_threads = 1 << ct_log2, k_slices = kColBlock >> ct_log2;
  const int ct = threadIdx.x & (col_threads - 1), ks = threadIdx.x >> ct_log2;
  const int64_t b = blockIdx.y;
  const int col0 = int(blockIdx.x) * col_threads * 8;
  const int n0 = col0 + ct * 8;
  const int valid = min(8, p.n - n0);  // <= 0: this thread's columns lie past N
  const XT* x = static_cast<const XT*>(p.x) + b * p.x_stride;
  const __nv_bfloat16* w = p.w + b * p.w_stride + n0;

  float acc[M][8] = {};
  for (int k0 = ks; k0 < p.k; k0 += k_slices * U) {
    uint4 wv[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int k = k0 + u * k_slices;
      wv[u] = k < p.k && valid > 0 ? load_cols(w + k * p.w_ld, valid) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int k = k0 + u * k_slices;
      if (k >= p.k) break;
      float wf[8];
      unpack_bf16x8(wv[u], wf);
#pragma unroll
      for (int m = 0; m < M; ++m) {
        const float xv = to_f32(x[m * p.x_ld + k]);
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[m][j] = fmaf(xv, wf[j], acc[m][j]);
      }
    }
  }

  pdl_launch_dependents();  // every weight load is issued: the next kernel may start launching
  // Lane l of a warp is (k slice, ct = l % col_threads): fold the k slices onto lanes <
  // col_threads.
#pragma unroll
  for (int m = 0; m < M; ++m)
#pragma unroll
    for (int j = 0; j < 8; ++j)
      for (int off = col_threads; off < 32; off <<= 1)
        acc[m][j] += __shfl_xor_sync(0xffffffffu, acc[m][j], off);

  __shared__ float part[kColWarps][kColBlock];  // [warp][j * col_threads + ct]
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, cols = col_threads * 8;
  YT* y = static_cast<YT*>(p.y) + b * p.y_stride;
#pragma unroll
  for (int m = 0; m < M; ++m) {
    if (lane < col_threads)
#pragma unroll
      for (int j = 0; j < 8; ++j) part[warp][j * col_threads + lane] = acc[m][j];
    __syncthreads();
    const int c = threadIdx.x;
    if (c < cols && col0 + c < p.n) {
      float v = 0.0f;
#pragma unroll
      for (int i = 0; i < kColWarps; ++i) v += part[i][(c & 7) * col_threads + (c >> 3)];
      store_y(y + m * p.y_ld + col0 + c, v, p.alpha, p.beta);
    }
    __syncthreads();  // part is rewritten for the next row
  }
}

// Thread-group widths: enough threads per row (column) that each walks at most ~16 chunks, then
// wider (less work per block) until the grid fills the GPU about 4 times over: a block's work is
// fixed, so with ~1 wave the last partial wave runs latency-bound at low occupancy.
enum class Layout { kOutByIn, kInByOut, kGlu };

template <int M, class XT, class YT, bool kGlu>
void launch_out_by_in(const GemvParams& p, int64_t batch, cudaStream_t stream) {
  constexpr int R = M > 2 ? 4 : 2;  // more rows per thread reuse each x load more
  constexpr int kOut = kGlu ? R / 2 : R;
  const auto kernel = gemv_out_by_in_kernel<M, R, XT, YT, kGlu>;
  static const int per_sm = resident_blocks(kernel, kRowBlock);
  // More rows per thread (M > 2) do better with fewer, fuller blocks.
  const int64_t target_blocks = (M <= 2 ? 4 * int64_t(per_sm) : 2) * sm_count();
  const int chunks = (p.k + 7) / 8;  // the K tail counts as a chunk
  const auto blocks = [&](int l) {
    const int outs = (kRowBlock >> l) * kOut;
    return (int64_t(p.n) + outs - 1) / outs;
  };
  int l = 2;
  while (l < 7 && chunks > (16 << l)) ++l;
  while (l < 7 && (4 << l) <= chunks && blocks(l) * batch < target_blocks) ++l;  // >= 2 chunks
  launch_pdl(kernel, dim3(unsigned(blocks(l)), unsigned(batch)), kRowBlock, 0, stream, p, l);
}

// Thread-group widths: enough threads per row (column) that each walks at most ~16 chunks, then
// wider (less work per block) until the grid fills the GPU about 4 times over: a block's work is
// fixed, so with ~1 wave the last partial wave runs latency-bound at low occupancy.
template <int M, class XT, class YT>
void launch_typed(const GemvParams& p, Layout layout, int64_t batch, cudaStream_t stream) {
  if (layout == Layout::kOutByIn) return launch_out_by_in<M, XT, YT, false>(p, batch, stream);
  if constexpr (std::is_same_v<XT, __nv_bfloat16> && std::is_same_v<YT, __nv_bfloat16>)
    if (layout == Layout::kGlu) return launch_out_by_in<M, XT, YT, true>(p, batch, stream);
  MLRA_REQUIRE(layout == Layout::kInByOut, "gemv: the SwiGLU form takes bf16 x and y only");
  const auto kernel = gemv_in_by_out_kernel<M, XT, YT>;
  static const int per_sm = resident_blocks(kernel, kColBlock);
  const int64_t target_blocks = 4 * int64_t(per_sm) * sm_count();
  const auto blocks = [&](int l) {
    const int cols = 8 << l;
    return (int64_t(p.n) + cols - 1) / cols;
  };
  int l = 2;  // at least 4 column threads: 64 contiguous bytes per k row
  while (l < 5 && (1 << l) * 8 < p.n) ++l;
  while (l > 2 && blocks(l) * batch < target_blocks) --l;
  launch_pdl(kernel, dim3(unsigned(blocks(l)), unsigned(batch)), kColBlock, 0, stream, p, l);
}

template <int M>
void launch_m(const GemvParams& p, DType xt, DType yt, Layout layout, int64_t batch,
              cudaStream_t stream) {
  using BF = __nv_bfloat16;
  const bool xb = xt == DType::kBF16, yb = yt == DType::kBF16;
  if (xb && yb) return launch_typed<M, BF, BF>(p, layout, batch, stream);
  if (xb) return launch_typed<M, BF, float>(p, layout, batch, stream);
  if (yb) return launch_typed<M, float, BF>(p, layout, batch, stream);
  return launch_typed<M, float, float>(p, layout, batch, stream);
}

using Launch = void (*)(const GemvParams&, DType, DType, Layout, int64_t, cudaStream_t);
constexpr Launch kByRows[kGemvMaxRows] = {launch_m<1>, launch_m<2>, launch_m<3>, launch_m<4>,
                                          launch_m<5>, launch_m<6>, launch_m<7>, launch_m<8>};

bool aligned16(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15u) == 0;
}

}  // namespace

bool gemv_supports(const MatView& x, int64_t x_stride, const MatView& w, int64_t w_stride,
                   bool w_out_by_in, const MatView& y, int64_t y_stride, int64_t batch) {
  (void)y_stride;
  const int64_t n = w_out_by_in ? w.rows : w.cols, k = w_out_by_in ? w.cols : w.rows;
  if (x.rows < 1 || x.rows > kGemvMaxRows || batch < 1 || batch > 65535) return false;
  if (n < 1 || k < 1 || n > INT_MAX / 2 || k > INT_MAX / 2) return false;
  if (w.dtype != DType::kBF16) return false;
  if (x.dtype != DType::kBF16 && x.dtype != DType::kF32) return false;
  if (y.dtype != DType::kBF16 && y.dtype != DType::kF32) return false;
  if (!aligned16(w.data) || w.ld % 8 != 0 || w_stride % 8 != 0) return false;
  if (!w_out_by_in) return true;  // x is read one element at a time
  // Any K: the 16-byte units holding a row's elements lie inside its ld (w.ld, x.ld multiples of
  // a unit); a K tail's values past K in them are read and zeroed, never used.
  const int64_t per16 = 16 / int64_t(dtype_size(x.dtype));
  return aligned16(x.data) && x.ld % per16 == 0 && x_stride % per16 == 0;
}

bool gemv_mma_supports(const MatView& x, int64_t x_stride, const MatView& w, int64_t w_stride,
                       bool w_out_by_in, const MatView& y, int64_t y_stride, int64_t batch) {
  return w_out_by_in && x.dtype == DType::kBF16 && w.rows <= INT_MAX - 16 &&
         gemv_supports(x, x_stride, w, w_stride, w_out_by_in, y, y_stride, batch);
}

GemvKernel gemv_auto_kernel(const MatView& x, int64_t x_stride, const MatView& w, int64_t w_stride,
                            bool w_out_by_in, const MatView& y, int64_t y_stride, int64_t batch) {
  return x.rows >= 2 && gemv_mma_supports(x, x_stride, w, w_stride, w_out_by_in, y, y_stride, batch)
             ? GemvKernel::kMma
             : GemvKernel::kFma;
}

void launch_gemv(const MatView& x, int64_t x_stride, const MatView& w, int64_t w_stride,
                 bool w_out_by_in, const MatView& y, int64_t y_stride, int64_t batch, float alpha,
                 float beta, cudaStream_t stream, GemvKernel kernel) {
  const int64_t n = w_out_by_in ? w.rows : w.cols, k = w_out_by_in ? w.cols : w.rows;
  MLRA_REQUIRE(x.cols == k && y.rows == x.rows && y.cols == n, "gemv: shape mismatch");
  MLRA_REQUIRE(gemv_supports(x, x_stride, w, w_stride, w_out_by_in, y, y_stride, batch),
               "gemv: unsupported operands (rows 1..8, bf16 w, bf16/f32 x, f32/bf16 y, 16-byte "
               "aligned w rows; out_by_in also 16-byte aligned x rows)");
  if (kernel == GemvKernel::kAuto)
    kernel = gemv_auto_kernel(x, x_stride, w, w_stride, w_out_by_in, y, y_stride, batch);
  if (kernel == GemvKernel::kMma) {
    MLRA_REQUIRE(w_out_by_in, "gemv: the tensor-core kernel takes w [N, K] only");
    return launch_gemv_mma(x, x_stride, w, w_stride, y, y_stride, batch, alpha, beta, stream);
  }
  GemvParams p = gemv_params(x, x_stride, w, w_stride, y, y_stride, n, k, alpha, beta);
  kByRows[x.rows - 1](p, x.dtype, y.dtype, w_out_by_in ? Layout::kOutByIn : Layout::kInByOut, batch,
                      stream);
}

bool gemv_swiglu_supports(const MatView& x, const MatView& w12, const MatView& y) {
  return x.dtype == DType::kBF16 && y.dtype == DType::kBF16 && w12.rows % 2 == 0 &&
         x.cols == w12.cols && y.rows == x.rows && y.cols == w12.rows / 2 &&
         gemv_supports(x, 0, w12, 0, true, y, 0, 1);
}

void launch_gemv_swiglu(const MatView& x, const MatView& w12, const MatView& y, cudaStream_t stream,
                        GemvKernel kernel) {
  MLRA_REQUIRE(gemv_swiglu_supports(x, w12, y),
               "gemv swiglu: needs bf16 x and y, w12 [2F, K] as for launch_gemv, y [M, F]");
  if (kernel == GemvKernel::kAuto) kernel = x.rows >= 2 ? GemvKernel::kMma : GemvKernel::kFma;
  if (kernel == GemvKernel::kMma) return launch_gemv_mma_swiglu(x, w12, y, stream);
  const int64_t f = w12.rows / 2;
  GemvParams p = gemv_params(x, 0, w12, 0, y, 0, f, w12.cols, 1.0f, 0.0f);
  kByRows[x.rows - 1](p, x.dtype, y.dtype, Layout::kGlu, 1, stream);
}

}  // namespace mlra::cuda
