// In-flight requests by client request_id, so the Cancel RPC can find the engine handle of a
// call served on another thread. An id is reserved before the engine sees the request, so a
// Cancel that races with submission is remembered and applied as soon as the handle exists.
// Invariant: an id is in the registry exactly while its RPC is in flight.
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

namespace mlra {

class RequestRegistry {
 public:
  // A fresh id for requests that came without one ("req-<n>").
  std::string next_id();
  // False when the id is already in flight.
  bool reserve(const std::string& id);
  // Records the engine handle; true when a Cancel arrived in between (caller cancels).
  bool attach(const std::string& id, uint64_t handle);
  // The handle to cancel; nullopt for unknown ids. A reserved id without handle yet is marked
  // so attach() reports the cancel.
  std::optional<uint64_t> request_cancel(const std::string& id, bool& found);
  void release(const std::string& id);
  size_t size() const;

 private:
  struct Entry {
    std::optional<uint64_t> handle;
    bool cancel_pending = false;
  };
  mutable std::mutex mutex_;
  std::unordered_map<std::string, Entry> entries_;
  uint64_t next_ = 1;
};

}  // namespace mlra
