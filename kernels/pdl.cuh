// Programmatic dependent launch (PDL) for our decode-path kernels: launched with
// cudaLaunchAttributeProgrammaticStreamSerialization, a kernel may start (its blocks resident,
// its launch latency paid) while the previous kernel on the stream is still finishing, which hides
// the ~1 us gap between the ~18 small launches of a decode layer. Also inside CUDA graphs.
// Invariant (silent corruption otherwise): every kernel launched through launch_pdl calls
// pdl_wait() in every block before its first global read or write of data another kernel touches;
// it returns once the previous grid has completed and its writes are visible. Transitively that
// covers every earlier op. After a non-PDL op (cuBLAS, NCCL, a copy) the launch is an ordinary
// dependency and pdl_wait() returns at once; the same holds for a launch without the attribute.
// pdl_launch_dependents() lets the next PDL kernel start launching; it never affects correctness.
#pragma once

#include <cuda_runtime.h>

#include <utility>

#include "kernels/cuda_check.h"

namespace mlra::cuda {

__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

__device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

// kernel<<<grid, block, smem, stream>>>(args...) with the PDL attribute; checks the launch. The
// kernel must call pdl_wait() first (see above).
template <class... Params, class... Args>
void launch_pdl(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                Args&&... args) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  MLRA_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...));
}

}  // namespace mlra::cuda
