// Device-side codec runs for test_cuda_fp8_cache.cpp (fp8_device_codec.h).
#include "fp8_device_codec.h"

#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include "kernels/cuda_check.h"
#include "kernels/fp8_e4m3.h"

namespace mlra::gputest {
namespace {

__global__ void mismatch_kernel(uint64_t begin, uint64_t end, unsigned long long* count) {
  const uint64_t i = begin + uint64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= end) return;
  const float x = f32_from_bits(uint32_t(i));
  if (x != x) return;  // NaN
  const uint8_t ours = fp8_e4m3_encode(x);
  const uint8_t hw = __nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3);
  if (ours != hw) atomicAdd(count, 1ull);
}

__global__ void quantize_kernel(const float* x, const float* scale, uint8_t* out, size_t n) {
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = fp8_quantize(x[i], scale[i]);
}

}  // namespace

uint64_t fp8_encode_mismatches_vs_hardware(uint64_t begin, uint64_t end) {
  unsigned long long* d = nullptr;
  MLRA_CUDA_CHECK(cudaMalloc(&d, sizeof(*d)));
  MLRA_CUDA_CHECK(cudaMemset(d, 0, sizeof(*d)));
  constexpr uint64_t kChunk = uint64_t(1) << 30;
  for (uint64_t b = begin; b < end; b += kChunk) {
    const uint64_t e = b + kChunk < end ? b + kChunk : end;
    mismatch_kernel<<<unsigned((e - b + 255) / 256), 256>>>(b, e, d);
    MLRA_CUDA_CHECK(cudaGetLastError());
  }
  unsigned long long count = 0;
  MLRA_CUDA_CHECK(cudaMemcpy(&count, d, sizeof(count), cudaMemcpyDeviceToHost));
  MLRA_CUDA_CHECK(cudaFree(d));
  return count;
}

std::vector<uint8_t> fp8_quantize_on_device(const std::vector<float>& x,
                                            const std::vector<float>& scale) {
  const size_t n = x.size();
  std::vector<uint8_t> out(n);
  float *dx = nullptr, *ds = nullptr;
  uint8_t* dout = nullptr;
  MLRA_CUDA_CHECK(cudaMalloc(&dx, n * sizeof(float)));
  MLRA_CUDA_CHECK(cudaMalloc(&ds, n * sizeof(float)));
  MLRA_CUDA_CHECK(cudaMalloc(&dout, n));
  MLRA_CUDA_CHECK(cudaMemcpy(dx, x.data(), n * sizeof(float), cudaMemcpyHostToDevice));
  MLRA_CUDA_CHECK(cudaMemcpy(ds, scale.data(), n * sizeof(float), cudaMemcpyHostToDevice));
  quantize_kernel<<<unsigned((n + 255) / 256), 256>>>(dx, ds, dout, n);
  MLRA_CUDA_CHECK(cudaGetLastError());
  MLRA_CUDA_CHECK(cudaMemcpy(out.data(), dout, n, cudaMemcpyDeviceToHost));
  cudaFree(dx);
  cudaFree(ds);
  cudaFree(dout);
  return out;
}

}  // namespace mlra::gputest
