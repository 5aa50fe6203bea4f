// Small-M GEMV of the CUDA backend: y_b = alpha * x_b . op(w_b) + beta * y_b for M <= 8 rows,
// bf16 weights, f32 accumulation, one kernel launch (no split-K second pass, no workspace), so
// batch-1..8 decode reads every weight byte once at close to memory bandwidth where cuBLAS picks
// split-K kernels. Two kernels: f32 FMAs (gemv.cu; both weight layouts, bf16 or f32 x) and tensor
// cores (gemv_mma.cu; w [N, K], bf16 x), whose cost does not grow with M. Same operand
// conventions as Backend::linear_batched. Graph capturable.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/kernel_options.h"
#include "kernels/tensor.h"

namespace mlra::cuda {

constexpr int64_t kGemvMaxRows = 8;
static_assert(kGemvMaxRows == KernelOptions::kMaxGemvRows);

// True when launch_gemv handles these operands: 1 <= x.rows <= 8, w bf16, x bf16/f32, y
// f32/bf16, 1 <= batch <= 65535, and the 16-byte vector loads line up: w's data 16-byte aligned,
// its ld and stride multiples of 8 elements; out_by_in (w [N, K]) also needs x's data, ld and
// stride 16-byte aligned. Any K: out_by_in reads each row in 16-byte units, the last one of a
// K % 8 != 0 row (the K tail) partly past K but inside the row's ld; the x and w values there
// past K are read, zeroed, and never reach y (they may be garbage, NaN included). So a row of K
// elements is stored with its ld rounded up to 8 (a multiple of 4 for f32 x). y has no
// alignment needs.
bool gemv_supports(const MatView& x, int64_t x_stride, const MatView& w, int64_t w_stride,
                   bool w_out_by_in, const MatView& y, int64_t y_stride, int64_t batch);

// kAuto: tensor cores for bf16 x of 2..8 rows over w [N, K] (gemv_mma_supports), FMAs otherwise.
// kFma / kMma force one kernel (benchmarks and tests); kMma requires gemv_mma_supports(...).
enum class GemvKernel { kAuto, kFma, kMma };

// For b < batch: y_b [M, N] = alpha * x_b [M, K] . op(w_b) + beta * y_b, operand b offset by
// b * stride elements (0: shared). op(w) = w^T when w_out_by_in (w_b [N, K]) else w (w_b [K, N]).
// beta == 0 never reads y (NaN in y is overwritten). f32 x is used as is (not rounded to bf16).
// Requires gemv_supports(...).
void launch_gemv(const MatView& x, int64_t x_stride, const MatView& w, int64_t w_stride,
                 bool w_out_by_in, const MatView& y, int64_t y_stride, int64_t batch, float alpha,
                 float beta, cudaStream_t stream, GemvKernel kernel = GemvKernel::kAuto);

// gemv_supports(...) for w [N, K] (w_out_by_in) and bf16 x: what the tensor-core kernel takes.
bool gemv_mma_supports(const MatView& x, int64_t x_stride, const MatView& w, int64_t w_stride,
                       bool w_out_by_in, const MatView& y, int64_t y_stride, int64_t batch);
// The kernel kAuto runs for these operands (kFma or kMma).
GemvKernel gemv_auto_kernel(const MatView& x, int64_t x_stride, const MatView& w, int64_t w_stride,
                            bool w_out_by_in, const MatView& y, int64_t y_stride, int64_t batch);

// SwiGLU in the product's epilogue: y [M, F] = silu(x . W1^T) * (x . W2^T) with w12 = [W1; W2]
// ([2F, K], nn.Linear rows of both halves back to back), each product rounded to bf16 before the
// silu as the composed linear + silu_mul would. A thread group reads rows n and F + n, so the
// weights stream once and no [M, 2F] intermediate is written. bf16 x and y, M <= 8.
bool gemv_swiglu_supports(const MatView& x, const MatView& w12, const MatView& y);
// kAuto as for launch_gemv (x is bf16, so tensor cores from 2 rows).
void launch_gemv_swiglu(const MatView& x, const MatView& w12, const MatView& y, cudaStream_t stream,
                        GemvKernel kernel = GemvKernel::kAuto);

// The tensor-core kernels themselves (gemv_mma.cu); launch_gemv / launch_gemv_swiglu pick them.
void launch_gemv_mma(const MatView& x, int64_t x_stride, const MatView& w, int64_t w_stride,
                     const MatView& y, int64_t y_stride, int64_t batch, float alpha, float beta,
                     cudaStream_t stream);
void launch_gemv_mma_swiglu(const MatView& x, const MatView& w12, const MatView& y,
                            cudaStream_t stream);

}  // namespace mlra::cuda
