// ChunkChannel: one mutex, one merged pending chunk, one wake per idle period (header).
#include "server/chunk_channel.h"

#include <iterator>

namespace mlra {

void ChunkChannel::merge(GenerationChunk& into, GenerationChunk&& from) {
  into.token_ids.insert(into.token_ids.end(), from.token_ids.begin(), from.token_ids.end());
  into.text += from.text;
  into.logprobs.insert(into.logprobs.end(), std::make_move_iterator(from.logprobs.begin()),
                       std::make_move_iterator(from.logprobs.end()));
  into.prompt_logprobs.insert(into.prompt_logprobs.end(),
                              std::make_move_iterator(from.prompt_logprobs.begin()),
                              std::make_move_iterator(from.prompt_logprobs.end()));
  if (from.finish_reason != FinishReason::kNone) {
    into.finish_reason = from.finish_reason;
    into.stop_string = std::move(from.stop_string);
    into.error_message = std::move(from.error_message);
    into.usage = from.usage;
  }
}

size_t ChunkChannel::bytes(const GenerationChunk& c) {
  size_t n = c.token_ids.size() * sizeof(int32_t) + c.text.size();
  for (const TokenLogprobs& lp : c.logprobs) n += sizeof(lp) + lp.top.size() * sizeof(TopLogprob);
  for (const TokenLogprobs& lp : c.prompt_logprobs) {
    n += sizeof(lp) + lp.top.size() * sizeof(TopLogprob);
  }
  return n;
}

void ChunkChannel::push(GenerationChunk&& chunk) {
  bool wake = false;
  {
    std::lock_guard lock(mutex_);
    const bool final = chunk.finish_reason != FinishReason::kNone;
    if (overflowed_ && !final) return;  // the consumer is cancelling; only the end matters now
    pending_bytes_ += bytes(chunk);
    if (pending_bytes_ > max_pending_bytes_ && !final) overflowed_ = true;
    if (overflowed_) {
      // Drop the unsent output: keep the bound even for the final chunk's payload.
      chunk.token_ids.clear();
      chunk.text.clear();
      chunk.logprobs.clear();
      chunk.prompt_logprobs.clear();
      if (pending_) {
        GenerationChunk kept;
        kept.finish_reason = pending_->finish_reason;
        pending_ = std::move(kept);
      }
    }
    if (pending_) {
      merge(*pending_, std::move(chunk));
    } else {
      pending_ = std::move(chunk);
    }
    if (!consumer_active_) consumer_active_ = wake = true;
  }
  if (wake && wake_) wake_();
}

std::optional<GenerationChunk> ChunkChannel::take() {
  std::lock_guard lock(mutex_);
  if (!pending_) {
    consumer_active_ = false;
    return std::nullopt;
  }
  std::optional<GenerationChunk> out = std::move(pending_);
  pending_.reset();
  pending_bytes_ = 0;
  return out;
}

bool ChunkChannel::overflowed() const {
  std::lock_guard lock(mutex_);
  return overflowed_;
}

}  // namespace mlra
