// The K/V prefill kernel (kv_prefill_attention.cu): MHA/GQA/MQA with head dim 128 when a step's
// sequences bring several query tokens each (query packing): 128 (token, head) rows per CTA on two
// wgmma warpgroups, fed by a producer warp's TMA ring.
#pragma once

#include "kernels/paged_attention_cuda.h"

namespace mlra::cuda {

// Query rows per CTA of the prefill kernel (the plan's rows_max on that path).
constexpr int kKvPrefillRows = 128;
// Whether multi-token K/V steps go to this kernel: sm_90a build (wgmma), tiles by TMA, and
// MLRA_KV_PREFILL != "0".
bool kv_prefill_enabled();
void launch_kv_prefill_attention(const AttentionParams& p, const HeadTiles& tiles,
                                 const SplitKvPlan& plan, cudaStream_t stream);

}  // namespace mlra::cuda
