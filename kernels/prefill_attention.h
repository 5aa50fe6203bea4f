// The prefill attention kernel (prefill_attention.cu) for 128-dim values: K/V caches with head
// dim 128 (MHA/GQA/MQA) and 128-wide latents (MLRA-4, GLA-4 per rank), used when a step's
// sequences bring several query tokens each (query packing): 128 (token, head) rows per CTA on two
// wgmma warpgroups, fed by a producer warp's TMA ring.
#pragma once

#include "kernels/paged_attention_cuda.h"

namespace mlra::cuda {

// Query rows per CTA of the prefill kernel (the plan's rows_max on that path).
constexpr int kPrefillRows = 128;
// Multi-token steps (prefill chunks) of kKv128, kLatent128 and kKvRope128 run here.
void launch_prefill_attention(const AttentionParams& p, const HeadTiles& tiles,
                              const SplitKvPlan& plan, AttentionPath path, cudaStream_t stream);

}  // namespace mlra::cuda
