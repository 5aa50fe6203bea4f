// Launchers of the CUDA sampling kernels (sampling.cu), driven by the CUDA TokenSampler
// (sampling_cuda.cpp). One block per logits row; every reduction and scan has a fixed shape, so
// a row's token is the same on every run.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "kernels/sampling.h"

namespace mlra::cuda {

// Device arrays of one sampling call. Shapes: R rows, V = text vocabulary.
struct SamplingDeviceArgs {
  const float* logits = nullptr;  // [R, ld] raw scores (columns >= V are never read)
  int64_t ld = 0;
  int32_t rows = 0;
  int32_t vocab = 0;
  const SamplingRow* params = nullptr;      // [R]
  const int32_t* penalty_indptr = nullptr;  // [R + 1]
  const int32_t* penalty_tokens = nullptr;  // [E]
  const int32_t* penalty_counts = nullptr;  // [E]
  float* work = nullptr;                    // [R, V] penalized, tempered scores
  int32_t* ids = nullptr;                   // [R, V] token ids (sort values)
  float* sorted = nullptr;                  // [R, V] work sorted descending (truncating rows only)
  int32_t* sorted_ids = nullptr;            // [R, V]
  int32_t max_top = 0;                      // top-n slots per row in the outputs
  int32_t* tokens = nullptr;                // [R]
  float* logprobs = nullptr;                // [R]
  int32_t* top_tokens = nullptr;            // [R, max_top]
  float* top_logprobs = nullptr;            // [R, max_top]
};

// work = scores after penalties and (non-greedy rows) temperature; ids = 0..V-1.
void launch_sampling_prepare(const SamplingDeviceArgs& a, cudaStream_t stream);
// Sorts the rows of work that truncate, segment s = elements [begin[s], end[s]) (device
// arrays, row * V and row * V + V), descending and stably (equal scores keep id order), into
// sorted / sorted_ids. temp == nullptr: only sets temp_bytes.
void sort_sampling_rows(void* temp, size_t& temp_bytes, const SamplingDeviceArgs& a,
                        int32_t segments, const int32_t* begin, const int32_t* end,
                        cudaStream_t stream);
// One token per row (greedy argmax or the seeded draw), plus logprobs where a row asks.
void launch_sampling_draw(const SamplingDeviceArgs& a, cudaStream_t stream);

}  // namespace mlra::cuda
