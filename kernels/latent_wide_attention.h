// The wide-latent attention kernel (d_c 256 and 512: GLA-2, MLA) with two consumer warpgroups:
// warpgroup 0 scores each cache tile and runs the online softmax, both warpgroups multiply the
// probabilities into their half of the value columns (latent_wide_attention.cu).
#pragma once

#include <cuda.h>

#include "kernels/paged_attention_cuda.h"

namespace mlra::cuda {

// Whether d_c goes to this kernel: 256 or 512, tiles arriving by TMA with wgmma (latent_uses_tma),
// and MLRA_LATENT_KERNEL != "split" (the single-warpgroup-per-column-slice kernel, for A/B runs).
bool latent_wide_enabled(int d_c);
// Cached rows per tile of this kernel: 64 for d_c 512, 128 for d_c 256.
int latent_wide_tile_rows(int d_c);
void launch_latent_wide(const AttentionParams& p, const HeadTiles& tiles, const SplitKvPlan& plan,
                        int d_c, const CUtensorMap& map, cudaStream_t stream);

}  // namespace mlra::cuda
