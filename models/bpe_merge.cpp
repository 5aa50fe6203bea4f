// Heap-driven BPE merge (see bpe_merge.h). Symbols keep the index of their first byte; a merge
// folds the right symbol into the left one, so index order is text order and ties in rank resolve
// left to right, as GPT-2's reference loop does. Stale heap entries are skipped on pop.
#include "models/bpe_merge.h"

#include <queue>

namespace mlra {
namespace {

struct Candidate {
  int32_t rank;
  int32_t left;     // symbol index
  int32_t right;    // symbol index
  int32_t left_id;  // ids when pushed, to detect that either side merged since
  int32_t right_id;
  bool operator>(const Candidate& other) const {
    return rank != other.rank ? rank > other.rank : left > other.left;
  }
};

using CandidateHeap = std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>>;

void push_pair(const MergeTable& merges, const std::vector<int32_t>& ids, int32_t left,
               int32_t right, CandidateHeap& heap) {
  if (left < 0 || right < 0) return;
  auto it = merges.find(merge_key(ids[left], ids[right]));
  if (it != merges.end()) heap.push({it->second.rank, left, right, ids[left], ids[right]});
}

}  // namespace

std::vector<int32_t> bpe_merge(const std::vector<int32_t>& symbols, const MergeTable& merges) {
  const int32_t n = static_cast<int32_t>(symbols.size());
  if (n < 2) return symbols;
  std::vector<int32_t> ids = symbols;
  std::vector<int32_t> prev(n), next(n);
  std::vector<bool> alive(n, true);
  for (int32_t i = 0; i < n; ++i) {
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  CandidateHeap heap;
  for (int32_t i = 0; i + 1 < n; ++i) push_pair(merges, ids, i, i + 1, heap);

  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    const bool stale = !alive[c.left] || !alive[c.right] || next[c.left] != c.right ||
                       ids[c.left] != c.left_id || ids[c.right] != c.right_id;
    if (stale) continue;
    ids[c.left] = merges.at(merge_key(c.left_id, c.right_id)).merged;
    alive[c.right] = false;
    next[c.left] = next[c.right];
    if (next[c.left] >= 0) prev[next[c.left]] = c.left;
    push_pair(merges, ids, prev[c.left], c.left, heap);
    push_pair(merges, ids, c.left, next[c.left], heap);
  }

  std::vector<int32_t> out;
  for (int32_t i = 0; i >= 0; i = next[i]) out.push_back(ids[i]);
  return out;
}

}  // namespace mlra
