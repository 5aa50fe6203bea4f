// Measured NCCL all-reduce time for the decode roofline: one process drives `gpus` devices
// (ncclCommInitAll), sums a bf16 buffer in place and reports the median time per call.
#pragma once

#include <cstdint>

namespace mlra {

// Median microseconds of one in-place bf16 sum all-reduce of `bytes` across GPUs 0..gpus-1;
// negative when fewer GPUs are visible or the build has no CUDA.
double allreduce_median_us(int gpus, int64_t bytes, int iters = 50);
int visible_gpus();

}  // namespace mlra
