// Host-side launch of a paged-attention kernel over its split-KV plan's grid: one CTA per (plan
// item, head tile), x = item (max_items(), the upper bound: CTAs past *plan.num_items return at
// once), y = head tile. Dynamic shared memory above the 48 KB default is opted in first; the decode
// attention kernels may launch with PDL (early cache streaming).
#pragma once

#include <cuda_runtime.h>

#include <utility>

#include "kernels/cuda_check.h"
#include "kernels/paged_attention_cuda.h"
#include "kernels/pdl.cuh"

namespace mlra::cuda {

// pdl: launched with programmatic dependent launch (pdl.cuh); the kernel then calls pdl_wait()
// before reading its predecessor's output.
template <class... Params, class... Args>
void launch_plan_grid_pdl(void (*kernel)(Params...), const SplitKvPlan& plan,
                          const HeadTiles& tiles, int threads, size_t smem, bool pdl,
                          cudaStream_t stream, Args&&... args) {
  if (smem > 48 * 1024)
    MLRA_CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  const dim3 grid(unsigned(plan.shape.max_items()), unsigned(tiles.count));
  if (pdl) return launch_pdl(kernel, grid, dim3(unsigned(threads)), smem, stream, args...);
  kernel<<<grid, threads, smem, stream>>>(std::forward<Args>(args)...);
  MLRA_CUDA_LAUNCH_CHECK();
}

template <class... Params, class... Args>
void launch_plan_grid(void (*kernel)(Params...), const SplitKvPlan& plan, const HeadTiles& tiles,
                      int threads, size_t smem, cudaStream_t stream, Args&&... args) {
  launch_plan_grid_pdl(kernel, plan, tiles, threads, smem, false, stream,
                       std::forward<Args>(args)...);
}

}  // namespace mlra::cuda
