// What the engine needs from a tokenizer: per request, turn generated ids into UTF-8-complete
// text deltas. The GPT-2 implementation wraps IncrementalDetokenizer (gpt2_stream_decoder.cpp);
// tests use a table of fixed strings, so stop strings across token boundaries are testable
// without a vocabulary file.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace mlra {

class TokenStreamDecoder {
 public:
  virtual ~TokenStreamDecoder() = default;
  virtual std::string feed(int32_t token) = 0;  // text completed by this token (may be empty)
  virtual std::string flush() = 0;              // text still buffered when generation ends
};

using TokenStreamDecoderFactory = std::function<std::unique_ptr<TokenStreamDecoder>()>;

}  // namespace mlra
