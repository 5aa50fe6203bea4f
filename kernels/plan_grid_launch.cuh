// Host-side launch of a paged-attention kernel over its split-KV plan's grid: one CTA per (plan
// item, head tile), x = item (max_items(), the upper bound: CTAs past *plan.num_items return at
// once), y = head tile. Dynamic shared memory above the 48 KB default is opted in first.
#pragma once

#include <cuda_runtime.h>

#include <utility>

#include "kernels/cuda_check.h"
#include "kernels/paged_attention_cuda.h"

namespace mlra::cuda {

template <class... Params, class... Args>
void launch_plan_grid(void (*kernel)(Params...), const SplitKvPlan& plan, const HeadTiles& tiles,
                      int threads, size_t smem, cudaStream_t stream, Args&&... args) {
  if (smem > 48 * 1024)
    MLRA_CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  const dim3 grid(unsigned(plan.shape.max_items()), unsigned(tiles.count));
  kernel<<<grid, threads, smem, stream>>>(std::forward<Args>(args)...);
  MLRA_CUDA_LAUNCH_CHECK();
}

}  // namespace mlra::cuda
