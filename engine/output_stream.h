// Per-request output side: turns each sampled token into a GenerationChunk (text delta through
// the TokenStreamDecoder and StopMatcher) and decides the finish reason: EOS (unless
// ignore_eos), stop token id, stop string, then max_tokens -> kLength, in that order.
#pragma once

#include <cstdint>
#include <memory>

#include "engine/request.h"
#include "engine/stop_matcher.h"
#include "engine/token_stream_decoder.h"

namespace mlra {

class OutputStream {
 public:
  OutputStream(const SamplingParams& params, int32_t eos_id,
               std::unique_ptr<TokenStreamDecoder> decoder);

  // token: the newly sampled id, num_generated: generated tokens including it.
  GenerationChunk on_token(int32_t token, int32_t num_generated, const TokenLogprobs* logprobs);

 private:
  void finish_text(GenerationChunk& chunk);  // releases buffered text at a non-string finish

  const SamplingParams& params_;
  int32_t eos_id_;
  std::unique_ptr<TokenStreamDecoder> decoder_;
  StopMatcher stop_;
};

}  // namespace mlra
