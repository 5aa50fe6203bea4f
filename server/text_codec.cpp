// gpt2_text_codec: thin lambdas over Gpt2Tokenizer, whose encode/decode are thread-safe.
#include "server/text_codec.h"

#include "models/gpt2_tokenizer.h"

namespace mlra {

TextCodec gpt2_text_codec(const Gpt2Tokenizer& tokenizer) {
  TextCodec codec;
  codec.encode = [tokenizer](std::string_view text) { return tokenizer.encode(text); };
  codec.decode = [tokenizer](const std::vector<int32_t>& ids) { return tokenizer.decode(ids); };
  return codec;
}

}  // namespace mlra
