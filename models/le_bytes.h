// Little-endian integer loads from unaligned bytes, shared by the zip, pickle and safetensors
// parsers. Callers bounds-check first; these helpers never read past p + n.
#pragma once

#include <cstddef>
#include <cstdint>

namespace mlra {

inline uint64_t load_le(const std::byte* p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}
inline uint16_t load_u16(const std::byte* p) {
  return static_cast<uint16_t>(load_le(p, 2));
}
inline uint32_t load_u32(const std::byte* p) {
  return static_cast<uint32_t>(load_le(p, 4));
}
inline uint64_t load_u64(const std::byte* p) {
  return load_le(p, 8);
}

}  // namespace mlra
