// Launchers of the CUDA backend's small kernels (element-wise, normalization, RoPE, embedding,
// cache scatter, dtype conversion). Each takes the backend's stream, asserts its shape
// preconditions on the host and checks the launch. Views may be f32, bf16 or f16 (math in f32).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/paged_attention.h"
#include "kernels/tensor.h"

namespace mlra::cuda {

// dst[r, c] = src[r, c] converted between float dtypes; same rows/cols.
void launch_convert(const MatView& src, const MatView& dst, cudaStream_t stream);
// out[i] = table[tokens[i]] (tokens on device; ids outside the table leave the row as NaN).
void launch_embed(const int32_t* tokens, int64_t n, const MatView& table, const MatView& out,
                  cudaStream_t stream);
// out = w * (x / rms(x)) * scale per row, f32 math; w has x.cols entries of w_dtype.
void launch_rms_norm(const MatView& x, const void* w, DType w_dtype, float eps, float scale,
                     const MatView& out, cudaStream_t stream);
// The same per equal column group: group g normed alone and scaled by w[g * cols/groups + ...].
void launch_rms_norm_groups(const MatView& x, const void* w, DType w_dtype, int64_t groups,
                            float eps, float scale, const MatView& out, cudaStream_t stream);
// acc (f32) += delta, then out = RMSNorm(acc) * w: the residual add fused into the next norm.
void launch_add_rms_norm(const MatView& delta, const MatView& acc, const void* w, DType w_dtype,
                         float eps, const MatView& out, cudaStream_t stream);
// In-place half-split RoPE, cos/sin in f32 (see Backend::rope).
void launch_rope(const MatView& x, int64_t n_heads, int64_t head_stride, int64_t rot_offset,
                 int64_t rot_dim, const int32_t* positions, float base, cudaStream_t stream);
void launch_silu_mul(const MatView& a, const MatView& b, const MatView& out, cudaStream_t stream);
void launch_sigmoid_mul(const MatView& gate, const MatView& x, cudaStream_t stream);
void launch_add(const MatView& x, const MatView& acc, cudaStream_t stream);
void launch_scale(const MatView& y, float alpha, cudaStream_t stream);
// cache row slots[i], cols [col_offset, + src.cols) <- src row i; slots outside the cache are
// skipped (the CPU reference throws; the engine never produces them).
void launch_cache_write(const MatView& src, const int32_t* slots, const PagedCacheView& cache,
                        int32_t col_offset, cudaStream_t stream);
// Backend::latent_cache_write in one launch: row [T, lat + rot_dim]; w [lat] of w_dtype (unused
// when groups == 0); slots outside the cache are skipped like launch_cache_write's.
void launch_latent_cache_write(const MatView& row, const void* w, DType w_dtype, int64_t groups,
                               float eps, float scale, int64_t rot_dim, const int32_t* positions,
                               float rope_base, const int32_t* slots, const PagedCacheView& cache,
                               cudaStream_t stream);
// The FP8 cache (fp8_e4m3.h): cache_write quantizing whole groups (launch_cache_write and
// launch_latent_cache_write hand FP8 views here), and the gather out row i <- cache row slots[i]
// cols [col_offset, + out.cols) dequantized (slots outside the cache give NaN rows).
void launch_fp8_cache_write(const MatView& src, const int32_t* slots, const PagedCacheView& cache,
                            int32_t col_offset, cudaStream_t stream);
void launch_fp8_cache_gather(const PagedCacheView& cache, const int32_t* slots, int64_t n,
                             int32_t col_offset, const MatView& out, cudaStream_t stream);
// Fills n elements of a float tensor with a value (NaN poisoning in tests, zero init).
void launch_fill(void* data, DType dtype, int64_t n, float value, cudaStream_t stream);
// Fills n elements with hash-based uniform values in [-1, 1) (benchmark inputs, never zeros).
void launch_fill_random(void* data, DType dtype, int64_t n, uint64_t seed, cudaStream_t stream);

}  // namespace mlra::cuda
