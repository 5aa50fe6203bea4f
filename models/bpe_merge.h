// Byte-pair merging of one pre-tokenized word, in O(n log n): a heap of candidate pairs ordered by
// (merge rank, position) over a linked list of symbols. Equivalent to GPT-2's "merge every
// occurrence of the lowest-ranked pair, left to right, repeat" for merge tables where a merged
// symbol only appears in later-ranked rules (true of every trained BPE table), without its
// quadratic cost on long runs of one character.
#pragma once

#include <cstdint>
#include <unordered_map>
#include <vector>

namespace mlra {

struct MergeRule {
  int32_t rank = 0;    // lower merges first (line order in vocab.bpe / merges.txt)
  int32_t merged = 0;  // id of the concatenated token
};

// Key of the pair (left, right) in a MergeTable.
inline uint64_t merge_key(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

using MergeTable = std::unordered_map<uint64_t, MergeRule>;

// symbols: (n) initial token ids of the word (one per byte for GPT-2). Returns the merged ids.
std::vector<int32_t> bpe_merge(const std::vector<int32_t>& symbols, const MergeTable& merges);

}  // namespace mlra
