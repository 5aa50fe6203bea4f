// Incremental detokenization: token bytes accumulate in pending_, and every complete (or
// definitely invalid) character moves to text_. Only a valid-so-far incomplete tail stays
// pending, so a delta never splits a character and never waits on bytes that cannot complete.
#include "models/incremental_detokenizer.h"

#include "models/utf8.h"

namespace mlra {

std::string IncrementalDetokenizer::push(int32_t id) {
  pending_ += tokenizer_.token_bytes(id);
  std::string delta;
  const size_t consumed = utf8_repair_prefix(pending_, false, &delta);
  pending_.erase(0, consumed);
  text_ += delta;
  return delta;
}

std::string IncrementalDetokenizer::flush() {
  std::string delta = utf8_repair(pending_);
  pending_.clear();
  text_ += delta;
  return delta;
}

}  // namespace mlra
