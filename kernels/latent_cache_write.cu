// The latent cache entry of each token in one launch (Backend::latent_cache_write, whose default
// composes rms_norm_groups + rope + cache_write, three launches per layer): row t = [latents |
// k_pe]; every latent group is RMS-normed in place, k_pe roped in place, and the row copied to
// cache slot slots[t]. Values are rounded to the row's dtype before the cache copy, exactly as
// the composition stores then copies them. grid (rows, groups + 1): block y < groups norms group
// y, the last block ropes k_pe (and copies unnormed latents when groups == 0). An FP8 cache is
// written by a second launch from the finished row (launch_fp8_cache_write).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels/cuda_check.h"
#include "kernels/cuda_ops.h"
#include "kernels/latent_cache_write.cuh"
#include "kernels/pdl.cuh"

namespace mlra::cuda {
namespace {

constexpr int kThreads = 128;

__global__ void __launch_bounds__(kThreads) latent_cache_write_kernel(EntryArgs a) {
  pdl_wait();  // launched with PDL: the row is the previous kernel's output
  pdl_launch_dependents();
  latent_entry<kThreads>(a, blockIdx.x, blockIdx.y);
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
