// The CUDA backend's matrix products: linear and linear_batched (our GEMV for decode-sized
// steps over bf16 weights, cuBLAS otherwise, with f32 <-> bf16 conversions where the operand types
// differ), the GEMV's SwiGLU form (linear_swiglu) and the persistent MLP half (mlp_block).
#include <cublas_v2.h>

#include <stdexcept>
#include <string>

#include "kernels/backend.h"
#include "kernels/cuda_backend_impl.h"
#include "kernels/cuda_check.h"
#include "kernels/cuda_ops.h"
#include "kernels/gemv.h"
#include "kernels/mlp_block.h"

namespace mlra::cuda_backend_detail {
namespace {

cudaDataType_t cuda_type(DType t) {
  switch (t) {
    case DType::kBF16:
      return CUDA_R_16BF;
    case DType::kF16:
      return CUDA_R_16F;
    case DType::kF32:
      return CUDA_R_32F;
    default:
      throw std::invalid_argument(std::string("cuda backend: no GEMM type for ") + dtype_name(t));
  }
}

}  // namespace

void CudaBackend::linear(const MatView& x, const MatView& w, const MatView& y, float alpha,
                         float beta) {
  MLRA_REQUIRE(x.cols == w.cols && y.rows == x.rows && y.cols == w.rows, "linear: shape mismatch");
  linear_batched(x, 0, w, 0, true, y, 0, 1, alpha, beta);
}

// Row-major y [M, N] = x [M, K] . op(w) is column-major y^T [N, M] = op(w)^T [N, K] . x^T [K, M].
void CudaBackend::linear_batched(const MatView& x, int64_t x_stride, const MatView& w,
                                 int64_t w_stride, bool w_out_by_in, const MatView& y,
                                 int64_t y_stride, int64_t batch, float alpha, float beta) {
  activate();
  const TimedOp timed(this, &OpTimes::matmul_ms);
  const int64_t n = w_out_by_in ? w.rows : w.cols;
  const int64_t k = w_out_by_in ? w.cols : w.rows;
  MLRA_REQUIRE(x.cols == k && y.rows == x.rows && y.cols == n, "linear_batched: shape mismatch");
  if (x.rows == 0 || n == 0 || batch == 0) return;
  // Few rows over bf16 weights (decode): our GEMV reads each weight byte once, where cuBLAS
  // picks split-K kernels plus a reduction launch. One row: the FMA kernel (either layout, an
  // f32 x read as is, not rounded to bf16 as below); 2..8 rows: the tensor-core kernel where it
  // applies (bf16 x, w [N, K]), cuBLAS otherwise (the FMA kernel's cost grows with the rows).
  // Any K: K % 8 != 0 runs on the GEMV's K tail (kernels/gemv.h).
  if (x.rows <= gemv_max_rows_ &&
      (x.rows == 1
           ? cuda::gemv_supports(x, x_stride, w, w_stride, w_out_by_in, y, y_stride, batch)
           : cuda::gemv_mma_supports(x, x_stride, w, w_stride, w_out_by_in, y, y_stride, batch))) {
    cuda::launch_gemv(x, x_stride, w, w_stride, w_out_by_in, y, y_stride, batch, alpha, beta,
                      stream());
    return;
  }
  // Mixed operands: bring an f32 operand to bf16 (the other is bf16) so cuBLAS sees one type.
  Tensor xt, wt, yt;
  MatView xv = x, wv = w, yv = y;
  const bool all_f32 = x.dtype == DType::kF32 && w.dtype == DType::kF32;
  if (!all_f32) {
    xv = to_bf16(x, x_stride, batch, xt);
    wv = to_bf16(w, w_stride, batch, wt);
  }
  const bool y_direct =
      all_f32 ? y.dtype == DType::kF32 : (y.dtype == DType::kF32 || y.dtype == DType::kBF16);
  int64_t ys = y_stride;
  if (!y_direct) {
    // f16 output (or bf16 output of f32 operands): compute in f32 and convert.
    ys = y_stride ? y.rows * y.cols : 0;
    yt = alloc({batch * y.rows, y.cols}, DType::kF32);
    yv = as_mat(yt, y.cols);
    yv.rows = y.rows;  // one operand, like y
    if (beta != 0.0f) copy_batched(y, y_stride, yv, ys, batch);
  }
  const int64_t xs = xv.data == x.data ? x_stride : (x_stride ? x.rows * x.cols : 0);
  const int64_t wsd = wv.data == w.data ? w_stride : (w_stride ? w.rows * w.cols : 0);
  MLRA_CUDA_CHECK(cublasGemmStridedBatchedEx(
      cublas_, w_out_by_in ? CUBLAS_OP_T : CUBLAS_OP_N, CUBLAS_OP_N, int(n), int(x.rows), int(k),
      &alpha, wv.data, cuda_type(wv.dtype), int(wv.ld), wsd, xv.data, cuda_type(xv.dtype),
      int(xv.ld), xs, &beta, yv.data, cuda_type(yv.dtype), int(yv.ld), ys, int(batch),
      CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  ++cublas_calls_;
  if (!y_direct) copy_batched(yv, ys, y, y_stride, batch);
}

// The GEMV's SwiGLU form where the product would take the GEMV anyway (decode-sized steps).
void CudaBackend::linear_swiglu(const MatView& x, const MatView& w12, const MatView& out) {
  activate();
  if (x.rows >= 1 && x.rows <= gemv_max_rows_ && cuda::gemv_swiglu_supports(x, w12, out)) {
    const TimedOp timed(this, &OpTimes::matmul_ms);
    return cuda::launch_gemv_swiglu(x, w12, out, stream());
  }
  Backend::linear_swiglu(x, w12, out);
}

// One-token steps under the mlp_block option: one persistent launch (kernels/mlp_block.h).
void CudaBackend::mlp_block(const MlpBlockArgs& m) {
  activate();
  if (mlp_block_ && m.delta.rows == 1) {
    const cuda::MlpBlockOperands o{m.delta, m.acc,  m.ln2.data, m.ln2.dtype, m.eps,
                                   m.w12,   m.proj, m.h,        m.a,         m.y};
    if (m.ln2.numel() == m.acc.cols && mlp_block_->supports(o) && mlp_block_->runs_on(stream())) {
      const TimedOp timed(this, &OpTimes::matmul_ms);
      return mlp_block_->launch(o, stream());
    }
  }
  Backend::mlp_block(m);
}

// bf16 copy of `batch` operands (stride apart) packed densely; the view itself when bf16.
MatView CudaBackend::to_bf16(const MatView& v, int64_t stride, int64_t batch, Tensor& keep) {
  if (v.dtype == DType::kBF16) return v;
  const int64_t copies = stride ? batch : 1;
  keep = alloc({copies * v.rows, v.cols}, DType::kBF16);
  MatView dense = as_mat(keep, v.cols);
  dense.rows = v.rows;  // one operand; copy_batched converts same-shaped views
  copy_batched(v, stride, dense, v.rows * v.cols, copies);
  return dense;
}

// dst_b = src_b for b < batch (converting dtypes); a zero stride means one shared operand.
void CudaBackend::copy_batched(const MatView& src, int64_t src_stride, const MatView& dst,
                               int64_t dst_stride, int64_t batch) {
  const int64_t copies = src_stride || dst_stride ? batch : 1;
  for (int64_t b = 0; b < copies; ++b) {
    MatView s = src, d = dst;
    s.data = static_cast<char*>(src.data) + b * src_stride * dtype_size(src.dtype);
    d.data = static_cast<char*>(dst.data) + b * dst_stride * dtype_size(dst.dtype);
    cuda::launch_convert(s, d, stream());
  }
}

}  // namespace mlra::cuda_backend_detail
