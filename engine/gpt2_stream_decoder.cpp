// The GPT-2 TokenStreamDecoder (IncrementalDetokenizer per request) and the Engine constructor
// that takes a Gpt2Tokenizer. Kept apart so engine.cpp does not depend on the tokenizer.
#include <memory>

#include "engine/engine.h"
#include "models/gpt2_tokenizer.h"
#include "models/incremental_detokenizer.h"

namespace mlra {

namespace {

class Gpt2StreamDecoder : public TokenStreamDecoder {
 public:
  explicit Gpt2StreamDecoder(const Gpt2Tokenizer& tokenizer)
      : tokenizer_(tokenizer), detok_(tokenizer) {}
  std::string feed(int32_t token) override {
    // The sampler only picks text-vocabulary ids; anything else has no text.
    return tokenizer_.contains(token) ? detok_.push(token) : std::string();
  }
  std::string flush() override { return detok_.flush(); }

 private:
  const Gpt2Tokenizer& tokenizer_;
  IncrementalDetokenizer detok_;
};

}  // namespace

Engine::Engine(std::unique_ptr<ModelRunner> runner, const Gpt2Tokenizer& tokenizer,
               EngineOptions options)
    : Engine(
          std::move(runner),
          [&tokenizer] { return std::make_unique<Gpt2StreamDecoder>(tokenizer); }, options) {}

}  // namespace mlra
