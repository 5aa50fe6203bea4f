// RequestRegistry: a mutex-guarded map; every operation is O(1) and never calls out.
#include "server/request_registry.h"

namespace mlra {

std::string RequestRegistry::next_id() {
  std::lock_guard lock(mutex_);
  return "req-" + std::to_string(next_++);
}

bool RequestRegistry::reserve(const std::string& id) {
  std::lock_guard lock(mutex_);
  return entries_.try_emplace(id).second;
}

bool RequestRegistry::attach(const std::string& id, uint64_t handle) {
  std::lock_guard lock(mutex_);
  auto it = entries_.find(id);
  if (it == entries_.end()) return false;
  it->second.handle = handle;
  return it->second.cancel_pending;
}

std::optional<uint64_t> RequestRegistry::request_cancel(const std::string& id, bool& found) {
  std::lock_guard lock(mutex_);
  auto it = entries_.find(id);
  found = it != entries_.end();
  if (!found) return std::nullopt;
  it->second.cancel_pending = true;
  return it->second.handle;
}

void RequestRegistry::release(const std::string& id) {
  std::lock_guard lock(mutex_);
  entries_.erase(id);
}

size_t RequestRegistry::size() const {
  std::lock_guard lock(mutex_);
  return entries_.size();
}

}  // namespace mlra
