// RMSNorm rows of a (possibly f32 residual) view into an output of any float dtype:
// out = w * (x * rsqrt(mean(x^2) + eps)) * scale, sum of squares in f32 (variants.md 1.4).
// One block per row; the row is read twice (sum, then normalize), the second time from L1/L2.
#include "kernels/cuda_check.h"
#include "kernels/cuda_ops.h"
#include "kernels/dtype_access.cuh"

namespace mlra::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void rms_norm_kernel(const void* x, DType xt, int64_t x_ld, const void* w, DType wt,
                                void* out, DType ot, int64_t out_ld, int64_t cols, float eps,
                                float scale) {
  const int64_t r = blockIdx.x;
  float ss = 0.0f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    const float v = load_as_f32(x, xt, r * x_ld + c);
    ss += v * v;
  }
  __shared__ float warp_sums[kThreads / 32];
  for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = ss;
  __syncthreads();
  float total = 0.0f;
  for (int i = 0; i < kThreads / 32; ++i) total += warp_sums[i];
  const float inv = rsqrtf(total / float(cols) + eps);
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    const float v = load_as_f32(x, xt, r * x_ld + c);
    store_from_f32(out, ot, r * out_ld + c, load_as_f32(w, wt, c) * (v * inv) * scale);
  }
}

}  // namespace

void launch_rms_norm(const MatView& x, const void* w, DType w_dtype, float eps, float scale,
                     const MatView& out, cudaStream_t stream) {
  MLRA_REQUIRE(x.rows == out.rows && x.cols == out.cols, "rms_norm: shape mismatch");
  if (x.rows == 0) return;
  rms_norm_kernel<<<unsigned(x.rows), kThreads, 0, stream>>>(
      x.data, x.dtype, x.ld, w, w_dtype, out.data, out.dtype, out.ld, x.cols, eps, scale);
  MLRA_CUDA_LAUNCH_CHECK();
}

}  // namespace mlra::cuda
