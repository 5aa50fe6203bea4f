// Block manager: reference-counted pages with a content-chain-hashed prefix cache (see header).
#include "engine/block_manager.h"

#include <algorithm>
#include <stdexcept>

#include <fmt/format.h>

namespace mlra {

namespace {

uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace

BlockManager::BlockManager(int64_t num_pages, int32_t page_size, bool enable_prefix_cache)
    : page_size_(page_size), enable_prefix_cache_(enable_prefix_cache) {
  if (num_pages <= 0 || page_size <= 0) {
    throw std::invalid_argument(fmt::format(
        "BlockManager needs pages > 0 and page_size > 0 (got {}, {})", num_pages, page_size));
  }
  pages_.resize(static_cast<size_t>(num_pages));
  plain_free_.reserve(pages_.size());
  for (int64_t p = num_pages - 1; p >= 0; --p) plain_free_.push_back(static_cast<int32_t>(p));
}

int64_t BlockManager::num_free() const {
  return static_cast<int64_t>(plain_free_.size() + cached_free_.size());
}

int64_t BlockManager::num_cached() const {
  return static_cast<int64_t>(cached_free_.size());
}

int32_t BlockManager::pages_for(int64_t num_tokens) const {
  return static_cast<int32_t>((num_tokens + page_size_ - 1) / page_size_);
}

uint64_t BlockManager::chain_hash(uint64_t parent, std::span<const int32_t> tokens) {
  uint64_t h = mix64(parent ^ 0x6a09e667f3bcc909ULL);
  for (int32_t t : tokens) h = mix64(h ^ static_cast<uint32_t>(t));
  return h == 0 ? 1 : h;  // 0 means "no parent"
}

std::vector<int32_t> BlockManager::match_prefix(std::span<const int32_t> tokens,
                                                int32_t max_tokens) const {
  std::vector<int32_t> matched;
  if (!enable_prefix_cache_) return matched;
  const int64_t limit = std::min<int64_t>(max_tokens, static_cast<int64_t>(tokens.size()));
  uint64_t parent = 0;
  for (int64_t start = 0; start + page_size_ <= limit; start += page_size_) {
    auto content = tokens.subspan(static_cast<size_t>(start), static_cast<size_t>(page_size_));
    const uint64_t h = chain_hash(parent, content);
    auto it = by_hash_.find(h);
    if (it == by_hash_.end()) break;
    const Page& page = pages_[it->second];
    if (page.parent_hash != parent ||
        !std::equal(content.begin(), content.end(), page.tokens.begin())) {
      break;  // hash collision: treat as a miss
    }
    matched.push_back(it->second);
    parent = h;
  }
  return matched;
}

int64_t BlockManager::num_free_among(const std::vector<int32_t>& pages) const {
  return std::count_if(pages.begin(), pages.end(), [&](int32_t p) { return pages_[p].ref == 0; });
}

void BlockManager::take_ref(int32_t page) {
  Page& p = pages_[page];
  if (p.where == Where::kCachedFree) {
    cached_free_.erase(p.lru_pos);
  } else if (p.where == Where::kPlainFree) {
    auto it = std::find(plain_free_.begin(), plain_free_.end(), page);
    plain_free_.erase(it);
  }
  p.where = Where::kUsed;
  ++p.ref;
}

void BlockManager::acquire_prefix(BlockTable& table, const std::vector<int32_t>& pages) {
  if (!table.pages.empty()) throw std::logic_error("acquire_prefix needs an empty block table");
  for (int32_t page : pages) {
    if (!pages_[page].hashed) throw std::logic_error("acquire_prefix: page is not registered");
    take_ref(page);
    table.pages.push_back(page);
  }
  table.num_hashed = static_cast<int32_t>(pages.size());
  table.last_hash = pages.empty() ? 0 : pages_[pages.back()].hash;
}

void BlockManager::unregister(int32_t page) {
  Page& p = pages_[page];
  if (!p.hashed) return;
  auto it = by_hash_.find(p.hash);
  if (it != by_hash_.end() && it->second == page) by_hash_.erase(it);
  p.hashed = false;
  p.hash = 0;
  p.parent_hash = 0;
  p.tokens.clear();
}

int32_t BlockManager::allocate_page() {
  int32_t page;
  if (!plain_free_.empty()) {
    page = plain_free_.back();
    plain_free_.pop_back();
  } else {
    page = cached_free_.front();
    cached_free_.pop_front();
    unregister(page);
  }
  Page& p = pages_[page];
  p.where = Where::kUsed;
  p.ref = 1;
  return page;
}

bool BlockManager::reserve(BlockTable& table, int64_t num_tokens) {
  const int64_t need = pages_for(num_tokens) - table.size();
  if (need <= 0) return true;
  if (need > num_free()) return false;
  for (int64_t i = 0; i < need; ++i) table.pages.push_back(allocate_page());
  return true;
}

void BlockManager::commit(BlockTable& table, std::span<const int32_t> tokens,
                          int32_t num_computed) {
  if (!enable_prefix_cache_) return;
  const int32_t full = std::min<int32_t>(num_computed / page_size_, table.size());
  for (int32_t i = table.num_hashed; i < full; ++i) {
    auto content =
        tokens.subspan(static_cast<size_t>(i) * page_size_, static_cast<size_t>(page_size_));
    const uint64_t h = chain_hash(table.last_hash, content);
    Page& p = pages_[table.pages[i]];
    if (!p.hashed && by_hash_.find(h) == by_hash_.end()) {
      p.hashed = true;
      p.hash = h;
      p.parent_hash = table.last_hash;
      p.tokens.assign(content.begin(), content.end());
      by_hash_.emplace(h, table.pages[i]);
    }
    // A page computed twice concurrently stays unregistered: the first copy serves later hits.
    table.last_hash = h;
    table.num_hashed = i + 1;
  }
}

void BlockManager::fork(const BlockTable& src, BlockTable& dst, int64_t num_tokens) {
  if (!dst.pages.empty()) throw std::logic_error("fork needs an empty destination table");
  const int32_t full = static_cast<int32_t>(std::min<int64_t>(num_tokens / page_size_, src.size()));
  for (int32_t i = 0; i < full; ++i) {
    take_ref(src.pages[i]);
    dst.pages.push_back(src.pages[i]);
  }
  dst.num_hashed = std::min(full, src.num_hashed);
  dst.last_hash = dst.num_hashed == 0                ? 0
                  : dst.num_hashed == src.num_hashed ? src.last_hash
                                                     : pages_[src.pages[dst.num_hashed - 1]].hash;
}

void BlockManager::release(BlockTable& table) {
  for (auto it = table.pages.rbegin(); it != table.pages.rend(); ++it) {
    Page& p = pages_[*it];
    if (p.ref <= 0) throw std::logic_error(fmt::format("release of free page {}", *it));
    if (--p.ref > 0) continue;
    if (p.hashed) {
      p.where = Where::kCachedFree;
      p.lru_pos = cached_free_.insert(cached_free_.end(), *it);
    } else {
      p.where = Where::kPlainFree;
      plain_free_.push_back(*it);
    }
  }
  table = BlockTable{};
}

std::string BlockManager::check_invariants(const std::vector<const BlockTable*>& tables) const {
  std::vector<int32_t> holders(pages_.size(), 0);
  for (size_t t = 0; t < tables.size(); ++t) {
    std::vector<int32_t> seen = tables[t]->pages;
    std::sort(seen.begin(), seen.end());
    if (std::adjacent_find(seen.begin(), seen.end()) != seen.end()) {
      return fmt::format("table {} holds a page twice", t);
    }
    for (int32_t p : seen) {
      if (p < 0 || p >= num_pages()) return fmt::format("table {} holds invalid page {}", t, p);
      ++holders[p];
    }
  }
  std::vector<int32_t> in_free(pages_.size(), 0);
  for (int32_t p : plain_free_) ++in_free[p];
  for (int32_t p : cached_free_) ++in_free[p];
  for (size_t p = 0; p < pages_.size(); ++p) {
    const Page& page = pages_[p];
    if (page.ref != holders[p]) {
      return fmt::format("page {} ref {} but held by {} tables", p, page.ref, holders[p]);
    }
    if ((page.ref > 0) == (in_free[p] > 0) || in_free[p] > 1) {
      return fmt::format("page {} ref {} appears {} times in free lists", p, page.ref, in_free[p]);
    }
    if (page.hashed) {
      auto it = by_hash_.find(page.hash);
      if (it == by_hash_.end() || it->second != static_cast<int32_t>(p)) {
        return fmt::format("page {} hashed but not in the hash index", p);
      }
    }
  }
  for (const auto& [hash, p] : by_hash_) {
    if (!pages_[p].hashed || pages_[p].hash != hash)
      return fmt::format("stale hash entry for page {}", p);
  }
  return "";
}

}  // namespace mlra
