// The CUDA backend's paged cache and attention ops: cache writes (plain or quantizing FP8), the
// FP8 gather, and paged attention through CudaPagedAttention (split-KV plan once per step, then
// the kernel family the caller names).
#include "kernels/backend.h"
#include "kernels/cuda_backend_impl.h"
#include "kernels/cuda_check.h"
#include "kernels/cuda_ops.h"
#include "kernels/paged_attention_cuda.h"

namespace mlra::cuda_backend_detail {

void CudaBackend::cache_write(const MatView& src, const int32_t* slots, const PagedCacheView& cache,
                              int32_t col_offset) {
  activate();
  cuda::launch_cache_write(src, slots, cache, col_offset, stream());
}

void CudaBackend::cache_gather(const PagedCacheView& cache, const int32_t* slots, int64_t n,
                               int32_t col_offset, const MatView& out) {
  if (cache.encoding == CacheEncoding::kPlain)
    return Backend::cache_gather(cache, slots, n, col_offset, out);
  activate();
  cuda::launch_fp8_cache_gather(cache, slots, n, col_offset, out, stream());
}

void CudaBackend::begin_step() {
  attention_.begin_step();
}

void CudaBackend::end_step() {
  attention_.end_step();
}

void CudaBackend::paged_attention(const PagedAttentionArgs& args) {
  activate();
  const TimedOp timed(this, &OpTimes::attention_ms);
  attention_.plan(args, stream());
  attention_.run(args, stream());
}

}  // namespace mlra::cuda_backend_detail
