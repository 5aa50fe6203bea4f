// Stop-string matching over streamed text deltas. Text that could still be the start of a stop
// string is held back; once a stop string appears, everything before it is released and it and
// everything after it is dropped. Invariant: released text never contains the start of a match.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace mlra {

class StopMatcher {
 public:
  explicit StopMatcher(std::vector<std::string> stops);  // empty strings are ignored

  struct Result {
    std::string text;  // safe to emit now
    bool stopped = false;
    std::string matched;  // the stop string found (when stopped)
  };

  // Appends a delta; returns what may be emitted. After a stop, further feeds return nothing.
  Result feed(std::string_view delta);
  // Releases held-back text when generation ends for another reason.
  std::string flush();
  bool stopped() const { return stopped_; }

 private:
  size_t holdback() const;  // longest suffix of pending_ that is a proper prefix of a stop

  std::vector<std::string> stops_;
  std::string pending_;
  bool stopped_ = false;
};

}  // namespace mlra
