// Device-side reads of an FP8 paged cache (layout and codec in fp8_e4m3.h): one value, dequantized
// to f32. The generic attention kernel and the gather read through here; the bytes are the CPU
// backend's (paged_cache_cpu.cpp), so both sides see the same values.
#pragma once

#include <cstdint>

#include "kernels/fp8_e4m3.h"

namespace mlra::cuda {

// Value `col` (0 .. layout.values()) of cache row `row` (= page * page_size + slot).
__device__ __forceinline__ float fp8_cache_value(const void* cache, const Fp8CacheLayout& l,
                                                 int64_t page_size, int64_t row, int64_t col) {
  const int64_t page = row / page_size, slot = row % page_size;
  const uint8_t* base = static_cast<const uint8_t*>(cache) + page * l.page_bytes(page_size);
  if (col < l.quantized()) {
    const float scale = *reinterpret_cast<const float*>(base + l.scales_at(page_size, slot) +
                                                        4 * (col / l.group_width));
    return fp8_dequantize(base[l.codes_at(slot) + col], scale);
  }
  return bf16_decode(*reinterpret_cast<const uint16_t*>(base + l.tail_at(page_size, slot) +
                                                        2 * (col - l.quantized())));
}

}  // namespace mlra::cuda
