// Output stream: text deltas, stop handling and finish reasons for one request (header).
#include "engine/output_stream.h"

#include <algorithm>

namespace mlra {

OutputStream::OutputStream(const SamplingParams& params, int32_t eos_id,
                           std::unique_ptr<TokenStreamDecoder> decoder)
    : params_(params), eos_id_(eos_id), decoder_(std::move(decoder)), stop_(params.stop) {}

void OutputStream::finish_text(GenerationChunk& chunk) {
  StopMatcher::Result tail = stop_.feed(decoder_->flush());
  chunk.text += tail.text;
  if (tail.stopped) {
    chunk.finish_reason = FinishReason::kStop;
    chunk.stop_string = tail.matched;
    return;
  }
  chunk.text += stop_.flush();
}

GenerationChunk OutputStream::on_token(int32_t token, int32_t num_generated,
                                       const TokenLogprobs* logprobs) {
  GenerationChunk chunk;
  chunk.token_ids.push_back(token);
  if (logprobs != nullptr) chunk.logprobs.push_back(*logprobs);
  const auto& stop_ids = params_.stop_token_ids;
  if (token == eos_id_ && !params_.ignore_eos) {
    chunk.finish_reason = FinishReason::kEos;
  } else if (std::find(stop_ids.begin(), stop_ids.end(), token) != stop_ids.end()) {
    chunk.finish_reason = FinishReason::kStop;
  } else if (token != eos_id_) {
    StopMatcher::Result r = stop_.feed(decoder_->feed(token));
    chunk.text = std::move(r.text);
    if (r.stopped) {
      chunk.finish_reason = FinishReason::kStop;
      chunk.stop_string = std::move(r.matched);
      return chunk;
    }
  }
  if (chunk.finish_reason == FinishReason::kNone && num_generated >= params_.max_tokens) {
    chunk.finish_reason = FinishReason::kLength;
  }
  // Buffered text is released at the end; if it completes a stop string the reason is kStop.
  if (chunk.finish_reason != FinishReason::kNone) finish_text(chunk);
  return chunk;
}

}  // namespace mlra
