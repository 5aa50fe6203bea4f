// TMA tensor maps over a paged cache (host side): the cache as a 2D tensor [num_pages *
// page_size, row_width] of bf16 whose boxes (box_rows x 64 dims) arrive in shared memory with the
// 128-byte swizzle the latent kernel's wgmma descriptors read.
#pragma once

#include <cuda.h>

#include "kernels/paged_attention_cuda.h"

namespace mlra::cuda {

// Encodes p.cache (p.row_width, p.cache_rows, p.box_rows) into map; false when it cannot (the
// driver lacks cuTensorMapEncodeTiled, or the cache breaks TMA's alignment rules).
bool make_cache_map(const AttentionParams& p, CUtensorMap& map);

}  // namespace mlra::cuda
