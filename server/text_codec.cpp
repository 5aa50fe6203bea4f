// gpt2_text_codec: thin lambdas over Gpt2Tokenizer, whose encode/decode are thread-safe, and the
// longest token's byte length (the prompt byte bound).
#include "server/text_codec.h"

#include <algorithm>

#include "models/gpt2_tokenizer.h"

namespace mlra {

TextCodec gpt2_text_codec(const Gpt2Tokenizer& tokenizer) {
  TextCodec codec;
  codec.encode = [tokenizer](std::string_view text) { return tokenizer.encode(text); };
  codec.decode = [tokenizer](const std::vector<int32_t>& ids) { return tokenizer.decode(ids); };
  for (int32_t id = 0; id < tokenizer.vocab_size(); ++id) {
    codec.max_token_bytes = std::max(codec.max_token_bytes, tokenizer.token_bytes(id).size());
  }
  return codec;
}

}  // namespace mlra
