// A per-request hand-off from the engine thread to the RPC thread that serves the request.
// push() never blocks on the reader (the engine thread must not wait on gRPC); the RPC thread
// drains with a timeout so it can also notice client cancellation while waiting.
// Invariant: chunks come out in the order the engine emitted them.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>

#include "engine/request.h"

namespace mlra {

class ChunkQueue {
 public:
  void push(GenerationChunk&& chunk) {
    {
      std::lock_guard lock(mutex_);
      chunks_.push_back(std::move(chunk));
    }
    ready_.notify_one();
  }

  // Waits up to `timeout` for the next chunk; nullopt when none arrived in time.
  std::optional<GenerationChunk> pop_for(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    if (!ready_.wait_for(lock, timeout, [this] { return !chunks_.empty(); })) return std::nullopt;
    GenerationChunk chunk = std::move(chunks_.front());
    chunks_.pop_front();
    return chunk;
  }

 private:
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<GenerationChunk> chunks_;
};

}  // namespace mlra
