// Error checking for every CUDA runtime / cuBLAS call and kernel launch of the CUDA backend.
// Failures throw std::runtime_error naming the call site, so a bad launch surfaces at the op that
// caused it instead of at a later synchronize.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace mlra::cuda {

[[noreturn]] inline void throw_cuda(const char* what, const char* file, int line) {
  throw std::runtime_error(std::string("CUDA error: ") + what + " at " + file + ":" +
                           std::to_string(line));
}

inline void check(cudaError_t e, const char* file, int line) {
  if (e != cudaSuccess) throw_cuda(cudaGetErrorString(e), file, line);
}

inline void check(cublasStatus_t s, const char* file, int line) {
  if (s != CUBLAS_STATUS_SUCCESS)
    throw_cuda((std::string("cuBLAS status ") + std::to_string(int(s))).c_str(), file, line);
}

inline void require(bool ok, const char* what, const char* file, int line) {
  if (!ok)
    throw std::invalid_argument(std::string("cuda backend: ") + what + " (" + file + ":" +
                                std::to_string(line) + ")");
}

}  // namespace mlra::cuda

#define MLRA_CUDA_CHECK(expr) ::mlra::cuda::check((expr), __FILE__, __LINE__)
#define MLRA_CUDA_LAUNCH_CHECK() ::mlra::cuda::check(cudaGetLastError(), __FILE__, __LINE__)
#define MLRA_REQUIRE(cond, what) ::mlra::cuda::require((cond), (what), __FILE__, __LINE__)
