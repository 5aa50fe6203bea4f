// Engine-side state of one request: its tokens (prompt + generated), how many of them are in the
// cache, and the pages holding them. Owned by the Engine, scheduled by the Scheduler.
// Invariant: num_computed <= tokens.size() and block_table.pages covers positions
// [0, num_computed) (plus what the current step writes).
#pragma once

#include <chrono>
#include <cstdint>
#include <vector>

#include "engine/block_table.h"
#include "engine/request.h"

namespace mlra {

enum class SequenceStatus { kWaiting, kRunning, kFinished };

// Engine-thread timestamps for metrics; a default-constructed time_point means "not yet".
struct SequenceTimes {
  using Clock = std::chrono::steady_clock;
  Clock::time_point arrival;          // submit()
  Clock::time_point first_scheduled;  // first step that computed any of its tokens
  Clock::time_point first_token;
  Clock::time_point last_token;
};

struct Sequence {
  uint64_t id = 0;
  std::vector<int32_t> tokens;  // [num_prompt + generated]
  int32_t num_prompt = 0;
  int32_t num_computed = 0;        // tokens whose cache rows are written
  int32_t num_cached_prompt = -1;  // prefix-cache hit at first admission, -1 before admission
  SequenceStatus status = SequenceStatus::kWaiting;
  BlockTable block_table;
  SamplingParams params;
  uint64_t seed = 0;  // resolved sampling seed (params.seed or drawn at submission)
  int32_t num_preemptions = 0;
  SequenceTimes times;

  int32_t size() const { return static_cast<int32_t>(tokens.size()); }
  int32_t num_generated() const { return size() - num_prompt; }
  int32_t num_uncomputed() const { return size() - num_computed; }
};

}  // namespace mlra
