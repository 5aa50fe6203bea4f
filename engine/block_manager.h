// Fixed-size cache pages with reference counts and prefix reuse. A full page is registered under
// a content-chain hash (parent page's hash + its token ids) so a later sequence with the same
// prefix takes a reference instead of recomputing it. Pages nobody references but that still hold
// a registered prefix stay cached and are evicted least-recently-freed first.
// Invariant: ref_count(p) == number of block tables holding p; every page is exactly one of
// {referenced, plain free, cached free}. Plain CPU code: no backend, no locking.
#pragma once

#include <cstdint>
#include <list>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/block_table.h"

namespace mlra {

class BlockManager {
 public:
  BlockManager(int64_t num_pages, int32_t page_size, bool enable_prefix_cache);

  int32_t page_size() const { return page_size_; }
  int64_t num_pages() const { return static_cast<int64_t>(pages_.size()); }
  int64_t num_free() const;    // allocatable now: plain free + cached free (evictable)
  int64_t num_cached() const;  // free pages still holding a registered prefix
  int64_t num_used() const { return num_pages() - num_free(); }
  int32_t ref_count(int32_t page) const { return pages_[page].ref; }
  bool prefix_cache_enabled() const { return enable_prefix_cache_; }
  int32_t pages_for(int64_t num_tokens) const;  // ceil(num_tokens / page_size)

  // Registered pages holding the full pages of tokens[0, max_tokens), longest chain first to
  // last; takes no references. Empty when the prefix cache is off.
  std::vector<int32_t> match_prefix(std::span<const int32_t> tokens, int32_t max_tokens) const;
  // How many of `pages` are free now (acquiring them shrinks the free pool by this much).
  int64_t num_free_among(const std::vector<int32_t>& pages) const;
  // Appends matched pages (from match_prefix) to an empty table, taking a reference on each.
  void acquire_prefix(BlockTable& table, const std::vector<int32_t>& pages);
  // Grows the table to cover num_tokens positions. False (table unchanged) if too few pages.
  bool reserve(BlockTable& table, int64_t num_tokens);
  // Registers the table's full pages within tokens[0, num_computed) in the prefix cache.
  void commit(BlockTable& table, std::span<const int32_t> tokens, int32_t num_computed);
  // Shares the first num_tokens / page_size (full) pages of src with an empty dst.
  void fork(const BlockTable& src, BlockTable& dst, int64_t num_tokens);
  // Drops every reference of the table (last page first, so tails are evicted first).
  void release(BlockTable& table);

  // Checks the invariants against the complete list of live tables; "" when all hold, else a
  // description of the first violation.
  std::string check_invariants(const std::vector<const BlockTable*>& tables) const;

 private:
  enum class Where { kUsed, kPlainFree, kCachedFree };
  struct Page {
    int32_t ref = 0;
    Where where = Where::kPlainFree;
    bool hashed = false;
    uint64_t hash = 0;
    uint64_t parent_hash = 0;
    std::vector<int32_t> tokens;  // [page_size] content, to rule out hash collisions
    std::list<int32_t>::iterator lru_pos;
  };

  int32_t allocate_page();  // requires num_free() > 0
  void take_ref(int32_t page);
  void unregister(int32_t page);
  static uint64_t chain_hash(uint64_t parent, std::span<const int32_t> tokens);

  int32_t page_size_;
  bool enable_prefix_cache_;
  std::vector<Page> pages_;
  std::vector<int32_t> plain_free_;  // stack; lowest page id on top initially
  std::list<int32_t> cached_free_;   // front = evicted first
  std::unordered_map<uint64_t, int32_t> by_hash_;
};

}  // namespace mlra
