// UTF-8 validation and lossy repair with the same replacement rule as Python's
// bytes.decode("utf-8", errors="replace"): each maximal invalid subpart becomes one U+FFFD.
// Used to stream detokenized text and to turn arbitrary token bytes into valid proto strings.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace mlra {

inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD

// Appends the decodable prefix of bytes to *out (invalid subparts replaced) and returns how many
// bytes it consumed. With final == false an incomplete but so-far-valid character at the very end
// is left unconsumed (at most 3 bytes); with final == true everything is consumed.
size_t utf8_repair_prefix(std::string_view bytes, bool final, std::string* out);

// bytes with every invalid subpart replaced by U+FFFD (final decode).
std::string utf8_repair(std::string_view bytes);

bool utf8_is_valid(std::string_view bytes);

}  // namespace mlra
