// libFuzzer: the tokenizer readers (models/gpt2_tokenizer.h). The first byte picks the mode:
//   0: the bundled GPT-2 tokenizer encodes the rest as text; valid UTF-8 must round-trip
//      (decode(encode(s)) == s), invalid UTF-8 must throw TokenizerError;
//   1: the rest is "<vocab json>\x00<merges text>\x00<text>": parse_bpe, then encode the text;
//   2: the rest is "<tokenizer.json>\x00<text>": parse_hf_json, then encode the text.
// Only TokenizerError may come out.
#include <cstdlib>
#include <string_view>

#include "models/gpt2_tokenizer.h"

namespace {

// Encodes and decodes `text`; a successful encode must decode back to exactly `text`.
void round_trip(const mlra::Gpt2Tokenizer& tok, std::string_view text) {
  try {
    const auto ids = tok.encode(text);
    if (tok.decode(ids) != text) std::abort();
    (void)tok.encode_with_special(text);
  } catch (const mlra::TokenizerError&) {
  }
}

std::string_view next_part(std::string_view& rest) {
  const size_t cut = rest.find('\0');
  const std::string_view part = rest.substr(0, cut);
  rest = cut == std::string_view::npos ? std::string_view() : rest.substr(cut + 1);
  return part;
}

}  // namespace

// Loaded once before fuzzing starts, so its load time never counts against an input's timeout.
const mlra::Gpt2Tokenizer* g_gpt2 = nullptr;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  g_gpt2 = new mlra::Gpt2Tokenizer(mlra::Gpt2Tokenizer::load(mlra::default_tokenizer_dir()));
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mlra;
  if (size < 1) return 0;
  std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  try {
    switch (data[0] % 3) {
      case 0:
        round_trip(*g_gpt2, rest);
        break;
      case 1: {
        const std::string_view vocab = next_part(rest), merges = next_part(rest);
        round_trip(Gpt2Tokenizer::parse_bpe(vocab, merges), rest);
        break;
      }
      default: {
        const std::string_view json = next_part(rest);
        round_trip(Gpt2Tokenizer::parse_hf_json(json), rest);
      }
    }
  } catch (const TokenizerError&) {
  }
  return 0;
}
