// UTF-8 validation by the Unicode table 3-7 ranges (no overlongs, no surrogates, <= U+10FFFF).
#include "server/utf8.h"

#include <cstdint>

namespace mlra {
namespace {

// Length of the valid sequence starting at s[i], or 0; `*consumed` is the maximal invalid
// subpart's length when 0 is returned (at least 1).
size_t valid_sequence(std::string_view s, size_t i, size_t* consumed) {
  const auto byte = [&](size_t k) { return static_cast<uint8_t>(s[k]); };
  const uint8_t b0 = byte(i);
  *consumed = 1;
  if (b0 < 0x80) return 1;
  size_t len = 0;
  uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  for (size_t k = 1; k < len; ++k) {
    if (i + k >= s.size()) return 0;
    const uint8_t b = byte(i + k);
    const bool ok = k == 1 ? (b >= lo && b <= hi) : (b >= 0x80 && b <= 0xBF);
    if (!ok) return 0;
    *consumed = k + 1;
  }
  return len;
}

}  // namespace

bool is_valid_utf8(std::string_view text) {
  size_t consumed = 0;
  for (size_t i = 0; i < text.size();) {
    const size_t n = valid_sequence(text, i, &consumed);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

std::string valid_utf8(std::string_view text) {
  if (is_valid_utf8(text)) return std::string(text);
  std::string out;
  out.reserve(text.size() + 8);
  size_t consumed = 0;
  for (size_t i = 0; i < text.size();) {
    const size_t n = valid_sequence(text, i, &consumed);
    if (n > 0) {
      out.append(text.substr(i, n));
      i += n;
    } else {
      out += "\xEF\xBF\xBD";
      i += consumed;  // the maximal subpart: the lead byte and the continuations valid so far
    }
  }
  return out;
}

}  // namespace mlra
