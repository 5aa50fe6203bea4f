// Counts a load generator's streams in flight and finished, so its main thread can keep the
// concurrency at a limit and wait for the last stream (either protocol's generator).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>

namespace mlra {

class StreamTracker {
 public:
  void started() {
    std::lock_guard lock(mu_);
    ++in_flight_;
  }
  void finished() {
    {
      std::lock_guard lock(mu_);
      --in_flight_;
      ++finished_;
    }
    cv_.notify_all();
  }
  // Blocks until fewer than `limit` streams are in flight.
  void wait_below(int32_t limit) {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return in_flight_ < limit; });
  }
  // Blocks until `total` streams have finished or `deadline` passes; false on the deadline.
  bool wait_all(int32_t total, std::chrono::steady_clock::time_point deadline) {
    std::unique_lock lock(mu_);
    return cv_.wait_until(lock, deadline, [&] { return finished_ == total; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int32_t in_flight_ = 0;
  int32_t finished_ = 0;
};

}  // namespace mlra
