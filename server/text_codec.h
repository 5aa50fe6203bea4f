// How the server turns prompt text into token ids and ids back into text (Tokenize,
// Detokenize, text prompts). Two functions rather than the tokenizer class, so the service and
// its end-to-end tests run with any vocabulary (GPT-2 in production, a toy table in tests).
// Both functions must be safe to call from many RPC threads at once.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace mlra {

struct TextCodec {
  std::function<std::vector<int32_t>(std::string_view)> encode;
  std::function<std::string(const std::vector<int32_t>&)> decode;
  // The most text bytes one token stands for: a text over max_context * max_token_bytes bytes
  // cannot fit the context, so it is refused before it is tokenized. 0: no such bound known.
  size_t max_token_bytes = 0;
};

class Gpt2Tokenizer;

// The GPT-2 tokenizer as a codec (ordinary encode: "<|endoftext|>" in a prompt is plain text).
// The codec keeps its own copy of the tokenizer (copies share one immutable vocabulary).
TextCodec gpt2_text_codec(const Gpt2Tokenizer& tokenizer);

}  // namespace mlra
