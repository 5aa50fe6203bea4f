// The wide-latent attention kernel (d_c 256 and 512: GLA-2, MLA) with two consumer warpgroups:
// warpgroup 0 scores each cache tile and runs the online softmax, both warpgroups multiply the
// probabilities into their half of the value columns (latent_wide_attention.cu).
#pragma once

#include <cuda.h>

#include "kernels/paged_attention_cuda.h"

namespace mlra::cuda {

// Cached rows per tile of this kernel: 64 for d_c 512, 128 for d_c 256.
int latent_wide_tile_rows(int d_c);
// Called by launch_latent_attention for d_c 256 and 512, which checked the arguments and made
// the cache's tensor map (p.box_rows divides the tile).
void launch_latent_wide(const AttentionParams& p, const HeadTiles& tiles, const SplitKvPlan& plan,
                        int d_c, const CUtensorMap& map, cudaStream_t stream);
// The same over an FP8 cache (p.fp8_cache: one d_c-wide group per latent, a 64-wide bf16 tail):
// codes and tail through the maps of make_fp8_cache_maps.
void launch_latent_wide_fp8(const AttentionParams& p, const HeadTiles& tiles,
                            const SplitKvPlan& plan, int d_c, const CUtensorMap& codes,
                            const CUtensorMap& tail, cudaStream_t stream);

}  // namespace mlra::cuda
