// UTF-8 scanning per the Unicode well-formed byte sequence table (RFC 3629): no overlongs, no
// surrogates, nothing above U+10FFFF. A truncated sequence counts as one invalid subpart, and the
// byte that broke it starts the next one, which is what Python's decoder does.
#include "models/utf8.h"

#include <cstdint>

namespace mlra {
namespace {

// Length of the sequence a lead byte announces (0 if it cannot start one) and the allowed range of
// its second byte; later bytes are always 0x80..0xBF.
struct LeadInfo {
  int length;
  uint8_t second_lo;
  uint8_t second_hi;
};

LeadInfo lead_info(uint8_t b) {
  if (b < 0x80) return {1, 0, 0};
  if (b >= 0xC2 && b <= 0xDF) return {2, 0x80, 0xBF};
  if (b == 0xE0) return {3, 0xA0, 0xBF};
  if (b == 0xED) return {3, 0x80, 0x9F};
  if (b >= 0xE1 && b <= 0xEF) return {3, 0x80, 0xBF};
  if (b == 0xF0) return {4, 0x90, 0xBF};
  if (b >= 0xF1 && b <= 0xF3) return {4, 0x80, 0xBF};
  if (b == 0xF4) return {4, 0x80, 0x8F};
  return {0, 0, 0};
}

// Number of bytes from bytes[pos] that continue a valid sequence (1..length).
int valid_run(std::string_view bytes, size_t pos, const LeadInfo& info) {
  int run = 1;
  for (; run < info.length && pos + run < bytes.size(); ++run) {
    const uint8_t b = static_cast<uint8_t>(bytes[pos + run]);
    const bool ok =
        run == 1 ? (b >= info.second_lo && b <= info.second_hi) : (b >= 0x80 && b <= 0xBF);
    if (!ok) break;
  }
  return run;
}

}  // namespace

size_t utf8_repair_prefix(std::string_view bytes, bool final, std::string* out) {
  size_t pos = 0;
  while (pos < bytes.size()) {
    const LeadInfo info = lead_info(static_cast<uint8_t>(bytes[pos]));
    if (info.length == 0) {
      out->append(kReplacementChar);
      pos += 1;
      continue;
    }
    const int run = valid_run(bytes, pos, info);
    if (run == info.length) {
      out->append(bytes.substr(pos, run));
    } else if (pos + run == bytes.size() && !final) {
      return pos;  // a character still being completed by later bytes
    } else {
      out->append(kReplacementChar);
    }
    pos += run;
  }
  return pos;
}

std::string utf8_repair(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  utf8_repair_prefix(bytes, true, &out);
  return out;
}

bool utf8_is_valid(std::string_view bytes) {
  size_t pos = 0;
  while (pos < bytes.size()) {
    const LeadInfo info = lead_info(static_cast<uint8_t>(bytes[pos]));
    if (info.length == 0 || valid_run(bytes, pos, info) != info.length) return false;
    pos += info.length;
  }
  return true;
}

}  // namespace mlra
