// In-place half-split ("rotate-half", NeoX) RoPE on sub-vectors of each row (models/VARIANTS.md
// 1.6): element k pairs with k + rot_dim/2, theta = pos * base^(-2k/rot_dim) in f32 and cos/sin in
// f32 with full range reduction (positions reach 1M), exactly as the CPU reference computes them.
// One thread per (row, head, k < rot_dim/2) pair.
#include "kernels/cuda_check.h"
#include "kernels/cuda_ops.h"
#include "kernels/dtype_access.cuh"
#include "kernels/pdl.cuh"
#include "kernels/rope_freq.cuh"

#include <algorithm>

namespace mlra::cuda {
namespace {

__global__ void rope_kernel(void* x, DType xt, int64_t ld, int64_t rows, int64_t n_heads,
                            int64_t head_stride, int64_t rot_offset, int64_t half,
                            const int32_t* positions, double base, int64_t rot_dim) {
  pdl_wait();  // launched with PDL: x and positions come from earlier ops
  pdl_launch_dependents();
  const int64_t n = rows * n_heads * half;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t k = i % half, h = (i / half) % n_heads, r = i / (half * n_heads);
    const float inv_freq = rope_inv_freq(int(k), int(rot_dim), base);
    const float theta = float(positions[r]) * inv_freq;
    float s, c;
    sincosf(theta, &s, &c);
    const int64_t base = r * ld + h * head_stride + rot_offset + k;
    const float u1 = load_as_f32(x, xt, base), u2 = load_as_f32(x, xt, base + half);
    store_from_f32(x, xt, base, u1 * c - u2 * s);
    store_from_f32(x, xt, base + half, u1 * s + u2 * c);
  }
}

}  // namespace

void launch_rope(const MatView& x, int64_t n_heads, int64_t head_stride, int64_t rot_offset,
                 int64_t rot_dim, const int32_t* positions, float base, cudaStream_t stream) {
  MLRA_REQUIRE(rot_dim % 2 == 0 && rot_dim > 0, "rope: rot_dim must be even and positive");
  MLRA_REQUIRE((n_heads - 1) * head_stride + rot_offset + rot_dim <= x.cols,
               "rope: head range outside the row");
  const int64_t n = x.rows * n_heads * (rot_dim / 2);
  if (n == 0) return;
  const int threads = 256;
  const int64_t blocks = std::min<int64_t>((n + threads - 1) / threads, 65535 * 8);
  launch_pdl(rope_kernel, unsigned(blocks), threads, 0, stream, x.data, x.dtype, x.ld, x.rows,
             n_heads, head_stride, rot_offset, rot_dim / 2, positions, double(base), rot_dim);
}

}  // namespace mlra::cuda
