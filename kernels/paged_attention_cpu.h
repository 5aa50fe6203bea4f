// CPU reference of paged attention (see kernels/paged_attention.h for the formulation).
// float32 inputs and cache, float64 softmax accumulation: the oracle for the CUDA kernels.
#pragma once

#include "kernels/paged_attention.h"

namespace mlra {

// Validates the arguments (offsets inside the cache row, positions covered by the page table)
// and throws std::invalid_argument on inconsistency.
void paged_attention_cpu(const PagedAttentionArgs& args);

}  // namespace mlra
