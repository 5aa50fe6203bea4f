// CPU access to a paged cache of either encoding (kernels/paged_attention.h): writes that quantize
// into the FP8 layout of kernels/fp8_e4m3.h, and reads that return float32 values. The CPU
// backend's cache ops and its reference attention go through here, so the bytes an FP8 cache holds
// are exactly what the encoding defines.
// Invariant: an FP8 write covers whole groups (a group's scale depends on all its values) and any
// part of the tail; anything else is refused.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/paged_attention.h"
#include "kernels/tensor.h"

namespace mlra {

// Float32 cache row slot (= page * page_size + offset), or nullptr for an FP8 cache.
const float* plain_cache_row(const PagedCacheView& cache, int64_t slot);

// cache row slots[i], values [col_offset, + src.cols) <- src row i (float32). Throws
// std::invalid_argument for a range outside the row or cutting an FP8 group, std::out_of_range
// for a slot outside the cache.
void write_cache_rows_cpu(const MatView& src, const int32_t* slots, const PagedCacheView& cache,
                          int32_t col_offset);

// out row i <- values [col_offset, + out.cols) of cache row slots[i], as float32.
void read_cache_rows_cpu(const PagedCacheView& cache, const int32_t* slots, int64_t n,
                         int32_t col_offset, const MatView& out);

// The whole row `slot` as row_width float32 values.
void read_cache_row_cpu(const PagedCacheView& cache, int64_t slot, float* out);

// Cached rows of one sequence as float32 for the reference attention: pointers into a float32
// cache, or rows of an FP8 cache dequantized once and kept while the next tokens read the same
// sequence (the tokens of a prefill chunk share one context).
class CacheRowReader {
 public:
  explicit CacheRowReader(const PagedCacheView& cache) : cache_(cache) {}
  // Makes positions [0, n) of sequence `seq` (page table `pages`) readable. Throws
  // std::invalid_argument for a page id outside the cache.
  void prepare(int32_t seq, const int32_t* pages, int64_t n);
  const float* row(int64_t p) const;

 private:
  const PagedCacheView& cache_;
  const int32_t* pages_ = nullptr;
  int32_t seq_ = -1;
  int64_t ready_ = 0;        // FP8: positions dequantized into rows_
  std::vector<float> rows_;  // FP8: [ready_, row_width]
};

}  // namespace mlra
