// UTF-8 validity for text that leaves the server in a proto `string` or a JSON string: a strict
// client refuses a reply whose string field is not UTF-8. Invalid sequences become U+FFFD, one
// per maximal invalid subpart (the WHATWG / Python errors="replace" rule), so the text of token
// ids that split a character (e.g. GPT-2 ids [447, 0]) reads "\ufffd!" rather than raw bytes.
#pragma once

#include <string>
#include <string_view>

namespace mlra {

bool is_valid_utf8(std::string_view text);
// `text` unchanged when it is valid; otherwise each invalid subpart replaced by U+FFFD.
std::string valid_utf8(std::string_view text);

}  // namespace mlra
