// Quantizing writes and dequantizing reads of paged caches on the CPU (paged_cache_cpu.h).
#include "kernels/paged_cache_cpu.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <stdexcept>
#include <string>

#include "kernels/fp8_e4m3.h"

namespace mlra {
namespace {

[[noreturn]] void fail(const std::string& m) {
  throw std::invalid_argument("paged cache: " + m);
}

bool is_fp8(const PagedCacheView& c) {
  return c.encoding == CacheEncoding::kFp8E4M3;
}

void check_view(const PagedCacheView& c) {
  if (is_fp8(c)) {
    if (c.fp8.groups < 0 || c.fp8.group_width <= 0 || c.fp8.tail < 0 ||
        c.fp8.values() != c.row_width)
      fail("FP8 layout does not add up to the row width");
  } else if (c.dtype != DType::kF32) {
    fail(std::string("the CPU backend's plain cache is float32, not ") + dtype_name(c.dtype));
  }
}

void check_slot(const PagedCacheView& c, int64_t slot) {
  if (slot < 0 || slot >= c.num_pages * c.page_size)
    throw std::out_of_range("cpu backend: cache slot " + std::to_string(slot) +
                            " outside the cache");
}

const std::array<float, 256>& fp8_values() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int i = 0; i < 256; ++i) t[size_t(i)] = fp8_e4m3_decode(uint8_t(i));
    return t;
  }();
  return table;
}

// The three planes of FP8 row `slot`.
struct Fp8Row {
  uint8_t* codes;
  float* scales;
  uint16_t* tail;
};

Fp8Row fp8_row(const PagedCacheView& c, int64_t slot) {
  const int64_t page = slot / c.page_size, s = slot % c.page_size;
  uint8_t* base = static_cast<uint8_t*>(c.data) + page * c.fp8.page_bytes(c.page_size);
  return {base + c.fp8.codes_at(s),
          reinterpret_cast<float*>(base + c.fp8.scales_at(c.page_size, s)),
          reinterpret_cast<uint16_t*>(base + c.fp8.tail_at(c.page_size, s))};
}

void write_fp8_row(const PagedCacheView& c, int64_t slot, const float* src, int64_t begin,
                   int64_t end) {
  const Fp8CacheLayout& l = c.fp8;
  const Fp8Row row = fp8_row(c, slot);
  const int64_t q_end = std::min(end, l.quantized());
  for (int64_t c0 = begin; c0 < q_end; c0 += l.group_width) {
    const float* x = src + (c0 - begin);
    float amax = 0.0f;
    for (int32_t i = 0; i < l.group_width; ++i) amax = std::max(amax, fp8_abs(x[i]));
    const float scale = fp8_group_scale(amax);
    row.scales[c0 / l.group_width] = scale;
    for (int32_t i = 0; i < l.group_width; ++i) row.codes[c0 + i] = fp8_quantize(x[i], scale);
  }
  for (int64_t col = std::max(begin, l.quantized()); col < end; ++col)
    row.tail[col - l.quantized()] = bf16_encode(src[col - begin]);
}

void read_fp8_row(const PagedCacheView& c, int64_t slot, int64_t begin, int64_t end, float* out) {
  const Fp8CacheLayout& l = c.fp8;
  const Fp8Row row = fp8_row(c, slot);
  const auto& value = fp8_values();
  const int64_t q_end = std::min(end, l.quantized());
  for (int64_t col = begin; col < q_end; ++col)
    out[col - begin] = value[row.codes[col]] * row.scales[col / l.group_width];
  for (int64_t col = std::max(begin, l.quantized()); col < end; ++col)
    out[col - begin] = bf16_decode(row.tail[col - l.quantized()]);
}

}  // namespace

const float* plain_cache_row(const PagedCacheView& c, int64_t slot) {
  if (is_fp8(c)) return nullptr;
  return static_cast<const float*>(c.data) + slot * c.row_width;
}

void write_cache_rows_cpu(const MatView& src, const int32_t* slots, const PagedCacheView& c,
                          int32_t col_offset) {
  if (src.dtype != DType::kF32) fail("cache writes take float32 rows");
  check_view(c);
  const int64_t begin = col_offset, end = begin + src.cols;
  if (begin < 0 || end > c.row_width) fail("write past the cache row");
  if (is_fp8(c)) {
    const int64_t q = c.fp8.quantized(), gw = c.fp8.group_width;
    if ((begin < q && begin % gw != 0) || (std::min(end, q) > begin && std::min(end, q) % gw != 0))
      fail("an FP8 cache write must cover whole groups of " + std::to_string(gw) + " values");
  }
  for (int64_t r = 0; r < src.rows; ++r) {
    check_slot(c, slots[r]);
    const float* s = static_cast<const float*>(src.data) + r * src.ld;
    if (is_fp8(c))
      write_fp8_row(c, slots[r], s, begin, end);
    else
      std::memcpy(static_cast<float*>(c.data) + int64_t(slots[r]) * c.row_width + begin, s,
                  size_t(src.cols) * sizeof(float));
  }
}

void read_cache_rows_cpu(const PagedCacheView& c, const int32_t* slots, int64_t n,
                         int32_t col_offset, const MatView& out) {
  if (out.dtype != DType::kF32) fail("cache reads give float32 rows");
  check_view(c);
  const int64_t begin = col_offset, end = begin + out.cols;
  if (begin < 0 || end > c.row_width) fail("read past the cache row");
  if (out.rows < n) fail("read into fewer rows than slots");
  for (int64_t r = 0; r < n; ++r) {
    check_slot(c, slots[r]);
    float* o = static_cast<float*>(out.data) + r * out.ld;
    if (is_fp8(c))
      read_fp8_row(c, slots[r], begin, end, o);
    else
      std::memcpy(o, plain_cache_row(c, slots[r]) + begin, size_t(out.cols) * sizeof(float));
  }
}

void read_cache_row_cpu(const PagedCacheView& c, int64_t slot, float* out) {
  check_view(c);
  check_slot(c, slot);
  if (is_fp8(c))
    read_fp8_row(c, slot, 0, c.row_width, out);
  else
    std::memcpy(out, plain_cache_row(c, slot), size_t(c.row_width) * sizeof(float));
}

void CacheRowReader::prepare(int32_t seq, const int32_t* pages, int64_t n) {
  const int64_t ps = cache_.page_size;
  if (seq != seq_ || pages != pages_) {
    seq_ = seq;
    pages_ = pages;
    ready_ = 0;
  }
  for (int64_t i = ready_ / ps; i < (n + ps - 1) / ps; ++i)
    if (pages[i] < 0 || pages[i] >= cache_.num_pages)
      throw std::invalid_argument("paged_attention: page id outside the cache");
  if (!is_fp8(cache_)) {
    ready_ = std::max(ready_, n);
    return;
  }
  if (n <= ready_) return;
  const int64_t w = cache_.row_width;
  rows_.resize(size_t(n * w));
  for (int64_t p = ready_; p < n; ++p)
    read_fp8_row(cache_, int64_t(pages[p / ps]) * ps + p % ps, 0, w, rows_.data() + p * w);
  ready_ = n;
}

const float* CacheRowReader::row(int64_t p) const {
  const int64_t ps = cache_.page_size;
  if (is_fp8(cache_)) return rows_.data() + p * cache_.row_width;
  return plain_cache_row(cache_, int64_t(pages_[p / ps]) * ps + p % ps);
}

}  // namespace mlra
