// Stop-string matcher: earliest match wins; hold back possible stop-string prefixes (header).
#include "engine/stop_matcher.h"

#include <algorithm>

namespace mlra {

StopMatcher::StopMatcher(std::vector<std::string> stops) {
  for (auto& s : stops) {
    if (!s.empty()) stops_.push_back(std::move(s));
  }
}

size_t StopMatcher::holdback() const {
  size_t best = 0;
  for (const std::string& stop : stops_) {
    const size_t max_len = std::min(stop.size() - 1, pending_.size());
    for (size_t len = max_len; len > best; --len) {
      if (pending_.compare(pending_.size() - len, len, stop, 0, len) == 0) {
        best = len;
        break;
      }
    }
  }
  return best;
}

StopMatcher::Result StopMatcher::feed(std::string_view delta) {
  Result result;
  if (stopped_) return result;
  pending_.append(delta);
  size_t first = std::string::npos;
  const std::string* which = nullptr;
  for (const std::string& stop : stops_) {
    const size_t at = pending_.find(stop);
    if (at < first || (at == first && at != std::string::npos && stop.size() > which->size())) {
      first = at;
      which = &stop;
    }
  }
  if (which != nullptr) {
    result.text = pending_.substr(0, first);
    result.stopped = stopped_ = true;
    result.matched = *which;
    pending_.clear();
    return result;
  }
  const size_t keep = holdback();
  result.text = pending_.substr(0, pending_.size() - keep);
  pending_.erase(0, pending_.size() - keep);
  return result;
}

std::string StopMatcher::flush() {
  std::string out;
  if (!stopped_) out.swap(pending_);
  pending_.clear();
  return out;
}

}  // namespace mlra
