// See bench_cuda_util.h.
#include "server/bench/bench_cuda_util.h"

#ifdef MLRA_HAVE_CUDA
#include "kernels/cuda_ops.h"

namespace mlra::bench {

double copy_bandwidth_gbs(cudaStream_t stream) {
  const size_t bytes = size_t(1) << 30;
  DeviceBuffer src(bytes), dst(bytes);
  cuda::launch_fill_random(src.p, DType::kF32, int64_t(bytes / 4), 7, stream);
  const float ms = time_ms(stream, 20, [&] {
    MLRA_CUDA_CHECK(cudaMemcpyAsync(dst.p, src.p, bytes, cudaMemcpyDeviceToDevice, stream));
  });
  return 2.0 * double(bytes) / (ms * 1e-3) / 1e9;
}

}  // namespace mlra::bench
#endif
