// The hand-off from the engine thread to whichever frontend (gRPC reactor, HTTP session) serves
// a request, without a thread per request. push() never blocks (the engine thread must not wait
// on a client) and wakes the consumer only when it is idle; the consumer take()s everything
// pending as one merged chunk per write, so a client that reads slower than the engine produces
// gets fewer, larger messages instead of a growing queue. Backpressure bound: once more than
// `max_pending_bytes` of output wait unsent, overflowed() turns true (the consumer cancels the
// request) and further non-final output is dropped; the final chunk is always kept.
// Invariants: chunks merge in the order the engine emitted them; between a take() that returned
// nothing and the next push() the consumer holds no obligation, and exactly one wake follows.
#pragma once

#include <cstddef>
#include <functional>
#include <mutex>
#include <optional>

#include "engine/request.h"

namespace mlra {

class ChunkChannel {
 public:
  using Wake = std::function<void()>;  // called on the engine thread; must not block

  ChunkChannel(size_t max_pending_bytes, Wake wake)
      : max_pending_bytes_(max_pending_bytes), wake_(std::move(wake)) {}

  void push(GenerationChunk&& chunk);
  // Everything pending, merged; nullopt when nothing is (the next push() wakes the consumer).
  std::optional<GenerationChunk> take();
  bool overflowed() const;

  // Appends `from` to `into`: tokens, text, logprobs; the final fields when `from` is final.
  static void merge(GenerationChunk& into, GenerationChunk&& from);
  // Approximate bytes a chunk holds (what the backpressure bound counts).
  static size_t bytes(const GenerationChunk& chunk);

 private:
  const size_t max_pending_bytes_;
  const Wake wake_;
  mutable std::mutex mutex_;
  std::optional<GenerationChunk> pending_;
  size_t pending_bytes_ = 0;
  bool consumer_active_ = false;  // a wake was sent and take() has not come back empty since
  bool overflowed_ = false;
};

}  // namespace mlra
