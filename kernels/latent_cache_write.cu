// The latent cache entry of each token in one launch (Backend::latent_cache_write, whose default
// composes rms_norm_groups + rope + cache_write, three launches per layer): row t = [latents |
// k_pe]; every latent group is RMS-normed in place, k_pe roped in place, and the row copied to
// cache slot slots[t]. Values are rounded to the row's dtype before the cache copy, exactly as
// the composition stores then copies them. grid (rows, groups + 1): block y < groups norms group
// y, the last block ropes k_pe (and copies unnormed latents when groups == 0). An FP8 cache is
// written by a second launch from the finished row (launch_fp8_cache_write).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels/block_sum.cuh"
#include "kernels/cuda_check.h"
#include "kernels/cuda_ops.h"
#include "kernels/dtype_access.cuh"
#include "kernels/pdl.cuh"
#include "kernels/rope_freq.cuh"

namespace mlra::cuda {
namespace {

constexpr int kThreads = 128;

struct EntryArgs {
  void* row;  // [rows, cols], row_ld apart
  DType rt;
  int64_t row_ld, cols, groups, g, rot_dim;
  const void* w;  // [groups * g] norm gains
  DType wt;
  float eps, scale;
  const int32_t* positions;  // [rows]
  double base;
  const int32_t* slots;  // [rows]
  void* cache;           // [capacity, row_width]
  DType ct;
  int64_t capacity, row_width;
};

__device__ __forceinline__ float round_as(float v, DType t) {
  switch (t) {
    case DType::kBF16:
      return __bfloat162float(__float2bfloat16(v));
    case DType::kF16:
      return __half2float(__float2half(v));
    default:
      return v;
  }
}

__global__ void __launch_bounds__(kThreads) latent_cache_write_kernel(EntryArgs a) {
  pdl_wait();  // launched with PDL: the row is the previous kernel's output
  pdl_launch_dependents();
  const int64_t r = blockIdx.x, slot = a.slots[r];
  const bool to_cache = slot >= 0 && slot < a.capacity;  // others skipped, as cache_write does
  const int64_t at = r * a.row_ld;
  auto put = [&](int64_t c, float v) {
    const float s = round_as(v, a.rt);
    store_from_f32(a.row, a.rt, at + c, s);
    if (to_cache) store_from_f32(a.cache, a.ct, slot * a.row_width + c, s);
  };
  const int64_t lat = a.cols - a.rot_dim;
  if (int64_t(blockIdx.y) < a.groups) {
    const int64_t c0 = int64_t(blockIdx.y) * a.g;
    float ss = 0.0f;
    for (int64_t c = threadIdx.x; c < a.g; c += kThreads) {
      const float x = load_as_f32(a.row, a.rt, at + c0 + c);
      ss += x * x;
    }
    const float inv = rsqrtf(block_sum<kThreads>(ss) / float(a.g) + a.eps);
    for (int64_t c = threadIdx.x; c < a.g; c += kThreads) {
      const float x = load_as_f32(a.row, a.rt, at + c0 + c);  // this thread's own element
      put(c0 + c, load_as_f32(a.w, a.wt, c0 + c) * (x * inv) * a.scale);
    }
    return;
  }
  const int64_t half = a.rot_dim / 2;
  const float pos = float(a.positions[r]);
  for (int64_t k = threadIdx.x; k < half; k += kThreads) {
    float s, c;
    sincosf(pos * rope_inv_freq(int(k), int(a.rot_dim), a.base), &s, &c);
    const float u1 = load_as_f32(a.row, a.rt, at + lat + k);
    const float u2 = load_as_f32(a.row, a.rt, at + lat + k + half);
    put(lat + k, u1 * c - u2 * s);
    put(lat + k + half, u1 * s + u2 * c);
  }
  if (a.groups == 0)
    for (int64_t c = threadIdx.x; c < lat; c += kThreads) put(c, load_as_f32(a.row, a.rt, at + c));
}

}  // namespace

void launch_latent_cache_write(const MatView& row, const void* w, DType w_dtype, int64_t groups,
                               float eps, float scale, int64_t rot_dim, const int32_t* positions,
                               float rope_base, const int32_t* slots, const PagedCacheView& cache,
                               cudaStream_t stream) {
  const int64_t lat = row.cols - rot_dim;
  MLRA_REQUIRE(rot_dim > 0 && rot_dim % 2 == 0 && lat >= 0,
               "latent_cache_write: row must be [latents | even rot_dim k_pe]");
  MLRA_REQUIRE(groups >= 0 && (groups == 0 || lat % groups == 0),
               "latent_cache_write: latents must split into equal groups");
  MLRA_REQUIRE(row.cols <= cache.row_width, "latent_cache_write: row wider than the cache row");
  MLRA_REQUIRE(groups <= 65534, "latent_cache_write: too many groups");
  if (row.rows == 0) return;
  // An FP8 group's scale needs all its values: the kernel writes only the row (capacity 0 skips
  // the cache), then the quantizing write reads it, as the composition it replaces would.
  const bool fp8 = cache.encoding == CacheEncoding::kFp8E4M3;
  const EntryArgs a{row.data,
                    row.dtype,
                    row.ld,
                    row.cols,
                    groups,
                    groups ? lat / groups : 0,
                    rot_dim,
                    w,
                    w_dtype,
                    eps,
                    scale,
                    positions,
                    double(rope_base),
                    slots,
                    cache.data,
                    cache.dtype,
                    fp8 ? 0 : cache.num_pages * cache.page_size,
                    cache.row_width};
  launch_pdl(latent_cache_write_kernel, dim3(unsigned(row.rows), unsigned(groups + 1)), kThreads, 0,
             stream, a);
  if (fp8) launch_fp8_cache_write(row, slots, cache, 0, stream);
}

}  // namespace mlra::cuda
