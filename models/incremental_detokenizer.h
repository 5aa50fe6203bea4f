// Streams token ids into text deltas that never end inside a UTF-8 character: trailing bytes of an
// incomplete character are held back until the next token completes them. flush() emits what is
// left with U+FFFD replacement, as Python's bytes.decode(errors="replace") would.
// Invariant: concatenating every push() and flush() result equals text() after flush(), and each
// delta is valid UTF-8.
#pragma once

#include <cstdint>
#include <string>

#include "models/gpt2_tokenizer.h"

namespace mlra {

class IncrementalDetokenizer {
 public:
  // Keeps a reference: the tokenizer must outlive this object.
  explicit IncrementalDetokenizer(const Gpt2Tokenizer& tokenizer) : tokenizer_(tokenizer) {}

  // Appends one token; returns the newly completed text (may be empty). Throws TokenizerError for
  // ids outside the vocabulary.
  std::string push(int32_t id);
  // Ends the stream: held-back bytes become U+FFFD characters. Further pushes start afresh
  // after the flushed text.
  std::string flush();
  // All text emitted so far (complete characters only until flush()).
  const std::string& text() const { return text_; }
  // Bytes held back because they do not yet form a complete character (at most 3).
  size_t pending_bytes() const { return pending_.size(); }

 private:
  const Gpt2Tokenizer& tokenizer_;
  std::string text_;
  std::string pending_;
};

}  // namespace mlra
