// The prefill attention kernel (prefill_attention.cu) for 128-dim values: K/V caches with head
// dim 128 (MHA/GQA/MQA) and 128-wide latents (MLRA-4, GLA-4 per rank), used when a step's
// sequences bring several query tokens each (query packing): 128 (token, head) rows per CTA on two
// wgmma warpgroups, fed by a producer warp's TMA ring.
#pragma once

#include "kernels/paged_attention_cuda.h"

namespace mlra::cuda {

// Query rows per CTA of the prefill kernel (the plan's rows_max on that path).
constexpr int kPrefillRows = 128;
// Whether multi-token steps of this path (kKv128, kLatent128 or kKvRope128) go to the prefill
// kernel: sm_90a build (wgmma), tiles by TMA, and MLRA_PREFILL_KERNEL != "0". kKvRope128 has no
// decode kernel: where this is false it runs on the generic kernel.
bool prefill_kernel_enabled(AttentionPath path);
void launch_prefill_attention(const AttentionParams& p, const HeadTiles& tiles,
                              const SplitKvPlan& plan, AttentionPath path, cudaStream_t stream);

}  // namespace mlra::cuda
