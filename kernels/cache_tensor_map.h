// TMA tensor maps over a paged cache (host side): the cache as a 2D tensor [num_pages *
// page_size, row_width] of bf16 whose boxes (box_rows x 64 dims) arrive in shared memory with the
// 128-byte swizzle the latent kernel's wgmma descriptors read; an FP8 cache's planes as 3D maps.
#pragma once

#include <cuda.h>

#include "kernels/paged_attention_cuda.h"

namespace mlra::cuda {

// Encodes p.cache (p.row_width, p.cache_rows, p.box_rows) into map; false when it cannot (the
// driver lacks cuTensorMapEncodeTiled, or the cache breaks TMA's alignment rules).
bool make_cache_map(const AttentionParams& p, CUtensorMap& map);
// An FP8 cache (p.fp8_cache, fp8_e4m3.h) as 3D maps (column, slot, page): its codes (u8, boxes
// of 128 codes x p.box_rows rows, no swizzle: converted to 16-bit values in shared memory,
// fp8_tile.cuh) and, for a cache with a tail, its bf16 tail (64-dim boxes with the 128-byte
// swizzle, as the bf16 map's). False when it cannot.
bool make_fp8_code_map(const AttentionParams& p, CUtensorMap& codes);
bool make_fp8_cache_maps(const AttentionParams& p, CUtensorMap& codes, CUtensorMap& tail);

}  // namespace mlra::cuda
