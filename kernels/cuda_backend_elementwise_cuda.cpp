// The CUDA backend's row-wise ops: embedding lookup, norms, rope and the elementwise
// activations, scaling and sums; each one launch of our kernels (cuda_ops.h) on the stream.
#include "kernels/backend.h"
#include "kernels/cuda_backend_impl.h"
#include "kernels/cuda_check.h"
#include "kernels/cuda_ops.h"

namespace mlra::cuda_backend_detail {

void CudaBackend::embed(const int32_t* tokens, int64_t n, const MatView& table,
                        const MatView& out) {
  activate();
  cuda::launch_embed(tokens, n, table, out, stream());
}

void CudaBackend::rms_norm(const MatView& x, const Tensor& w, float eps, float scale,
                           const MatView& out) {
  activate();
  MLRA_REQUIRE(w.numel() == x.cols, "rms_norm weight size");
  cuda::launch_rms_norm(x, w.data, w.dtype, eps, scale, out, stream());
}

void CudaBackend::rms_norm_groups(const MatView& x, const Tensor& w, int64_t groups, float eps,
                                  float scale, const MatView& out) {
  activate();
  MLRA_REQUIRE(w.numel() == x.cols, "rms_norm_groups weight size");
  cuda::launch_rms_norm_groups(x, w.data, w.dtype, groups, eps, scale, out, stream());
}

void CudaBackend::add_rms_norm(const MatView& delta, const MatView& acc, const Tensor& w, float eps,
                               const MatView& out) {
  activate();
  MLRA_REQUIRE(w.numel() == acc.cols, "add_rms_norm weight size");
  cuda::launch_add_rms_norm(delta, acc, w.data, w.dtype, eps, out, stream());
}

void CudaBackend::rope(const MatView& x, int64_t n_heads, int64_t head_stride, int64_t rot_offset,
                       int64_t rot_dim, const int32_t* positions, float base) {
  activate();
  cuda::launch_rope(x, n_heads, head_stride, rot_offset, rot_dim, positions, base, stream());
}

void CudaBackend::silu_mul(const MatView& a, const MatView& b, const MatView& out) {
  activate();
  cuda::launch_silu_mul(a, b, out, stream());
}

void CudaBackend::sigmoid_mul(const MatView& gate, const MatView& x) {
  activate();
  cuda::launch_sigmoid_mul(gate, x, stream());
}

void CudaBackend::add(const MatView& x, const MatView& acc) {
  activate();
  cuda::launch_add(x, acc, stream());
}

void CudaBackend::scale(const MatView& y, float alpha) {
  activate();
  cuda::launch_scale(y, alpha, stream());
}

}  // namespace mlra::cuda_backend_detail
