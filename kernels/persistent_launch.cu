// Host side of the cooperative persistent kernels (persistent_launch.h).
#include "kernels/persistent_launch.h"

#include "kernels/cuda_check.h"
#include "kernels/pdl.cuh"

namespace mlra::cuda {
namespace {

__global__ void probe_kernel() {
  pdl_wait();
}

}  // namespace

cudaLaunchConfig_t cooperative_launch_config(dim3 grid, dim3 block, size_t smem,
                                             cudaStream_t stream, cudaLaunchAttribute (&attr)[2],
                                             bool pdl) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  attr[0].id = cudaLaunchAttributeCooperative;
  attr[0].val.cooperative = 1;
  attr[1].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[1].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = pdl ? 2 : 1;
  return cfg;
}

bool cooperative_launch_works(bool pdl, bool capture) {
  cudaStream_t s = nullptr;
  MLRA_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  bool ok = !capture || cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) == cudaSuccess;
  cudaLaunchAttribute attr[2];
  cudaLaunchConfig_t cfg = cooperative_launch_config(dim3(1), dim3(32), 0, s, attr, true);
  cfg.attrs = attr + 1;  // PDL only: the predecessor
  cfg.numAttrs = 1;
  ok = ok && cudaLaunchKernelEx(&cfg, probe_kernel) == cudaSuccess;
  cfg = cooperative_launch_config(dim3(1), dim3(32), 0, s, attr, pdl);
  ok = ok && cudaLaunchKernelEx(&cfg, probe_kernel) == cudaSuccess;
  if (capture) {
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    ok = cudaStreamEndCapture(s, &graph) == cudaSuccess && ok;
    ok = ok && cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess;
    ok = ok && cudaGraphLaunch(exec, s) == cudaSuccess;
    ok = cudaStreamSynchronize(s) == cudaSuccess && ok;
    if (exec) cudaGraphExecDestroy(exec);
    if (graph) cudaGraphDestroy(graph);
  }
  ok = cudaStreamSynchronize(s) == cudaSuccess && ok;
  (void)cudaGetLastError();
  MLRA_CUDA_CHECK(cudaStreamDestroy(s));
  return ok;
}

}  // namespace mlra::cuda
