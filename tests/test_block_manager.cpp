// BlockManager: invariants under random alloc/commit/fork/free, prefix reuse, LRU eviction.
#include <catch2/catch.hpp>

#include <map>
#include <random>

#include "engine/block_manager.h"

using namespace mlra;

namespace {

std::vector<int32_t> random_tokens(std::mt19937_64& rng, int n, int vocab) {
  std::uniform_int_distribution<int> d(0, vocab - 1);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = d(rng);
  return t;
}

std::vector<const BlockTable*> live(const std::map<int, BlockTable>& tables) {
  std::vector<const BlockTable*> out;
  for (const auto& [id, t] : tables) out.push_back(&t);
  return out;
}

}  // namespace

TEST_CASE("block manager invariants hold under random alloc/commit/fork/free",
          "[engine][block_manager]") {
  std::mt19937_64 rng(7);
  const int32_t ps = 4;
  BlockManager bm(37, ps, true);
  // A few shared prefixes so that hits, sharing and eviction all happen.
  std::vector<std::vector<int32_t>> stems;
  for (int i = 0; i < 4; ++i) stems.push_back(random_tokens(rng, 13, 5));
  std::map<int, BlockTable> tables;
  std::map<int, std::vector<int32_t>> contents;
  int next_id = 0;
  int hits = 0;
  for (int iter = 0; iter < 4000; ++iter) {
    const int op = std::uniform_int_distribution<int>(0, 9)(rng);
    if (op < 4) {  // new sequence: stem + random tail, prefix lookup, reserve, commit
      std::vector<int32_t> toks = stems[rng() % stems.size()];
      toks.resize(std::uniform_int_distribution<size_t>(1, toks.size())(rng));
      auto tail = random_tokens(rng, static_cast<int>(rng() % 9), 5);
      toks.insert(toks.end(), tail.begin(), tail.end());
      auto matched = bm.match_prefix(toks, static_cast<int32_t>(toks.size()) - 1);
      const int64_t need =
          bm.pages_for(static_cast<int64_t>(toks.size())) - static_cast<int64_t>(matched.size());
      if (bm.num_free_among(matched) + need > bm.num_free()) continue;
      BlockTable t;
      bm.acquire_prefix(t, matched);
      hits += matched.empty() ? 0 : 1;
      REQUIRE(bm.reserve(t, static_cast<int64_t>(toks.size())));
      bm.commit(t, toks, static_cast<int32_t>(toks.size()));
      tables[next_id] = t;
      contents[next_id++] = toks;
    } else if (op < 6 && !tables.empty()) {  // grow an existing sequence
      auto it = std::next(tables.begin(), static_cast<long>(rng() % tables.size()));
      auto& toks = contents[it->first];
      auto more = random_tokens(rng, 1 + static_cast<int>(rng() % 6), 5);
      toks.insert(toks.end(), more.begin(), more.end());
      if (!bm.reserve(it->second, static_cast<int64_t>(toks.size()))) {
        toks.resize(toks.size() - more.size());
        continue;
      }
      bm.commit(it->second, toks, static_cast<int32_t>(toks.size()));
    } else if (op < 7 && !tables.empty()) {  // fork full pages
      auto it = std::next(tables.begin(), static_cast<long>(rng() % tables.size()));
      BlockTable child;
      bm.fork(it->second, child, static_cast<int64_t>(contents[it->first].size()));
      std::vector<int32_t> toks(contents[it->first].begin(),
                                contents[it->first].begin() + static_cast<long>(child.size()) * ps);
      tables[next_id] = child;
      contents[next_id++] = toks;
    } else if (!tables.empty()) {  // free
      auto it = std::next(tables.begin(), static_cast<long>(rng() % tables.size()));
      bm.release(it->second);
      contents.erase(it->first);
      tables.erase(it);
    }
    const std::string violation = bm.check_invariants(live(tables));
    INFO("iteration " << iter);
    REQUIRE(violation.empty());
  }
  CHECK(hits > 50);
  for (auto& [id, t] : tables) bm.release(t);
  tables.clear();
  REQUIRE(bm.check_invariants({}).empty());
  CHECK(bm.num_used() == 0);
  CHECK(bm.num_free() == bm.num_pages());
  for (int32_t p = 0; p < bm.num_pages(); ++p) CHECK(bm.ref_count(p) == 0);
}

TEST_CASE("a shared prompt prefix is matched page by page and never past the last token",
          "[engine][block_manager][prefix]") {
  std::mt19937_64 rng(11);
  BlockManager bm(16, 4, true);
  auto prompt = random_tokens(rng, 11, 1000);  // pages [0,4) [4,8) full, [8,11) partial
  BlockTable a;
  REQUIRE(bm.reserve(a, 11));
  bm.commit(a, prompt, 11);
  CHECK(a.num_hashed == 2);

  auto b_tokens = prompt;
  b_tokens[9] = 999 - b_tokens[9];
  auto matched = bm.match_prefix(b_tokens, static_cast<int32_t>(b_tokens.size()) - 1);
  REQUIRE(matched.size() == 2);
  CHECK(matched[0] == a.pages[0]);
  CHECK(matched[1] == a.pages[1]);
  // An 8-token prompt equal to the first two pages keeps its last token to compute: one page.
  std::vector<int32_t> short_prompt(prompt.begin(), prompt.begin() + 8);
  CHECK(bm.match_prefix(short_prompt, 7).size() == 1);
  // Different first page: nothing matches even though page 2 content is equal (chain hash).
  auto c_tokens = prompt;
  c_tokens[0] = 999 - c_tokens[0];
  CHECK(bm.match_prefix(c_tokens, 10).empty());

  BlockTable b;
  bm.acquire_prefix(b, matched);
  CHECK(bm.ref_count(a.pages[0]) == 2);
  REQUIRE(bm.reserve(b, 11));
  CHECK(b.pages[2] != a.pages[2]);
  REQUIRE(bm.check_invariants({&a, &b}).empty());

  // After both finish the prefix stays cached, and a third sequence still hits it.
  bm.release(a);
  bm.release(b);
  CHECK(bm.num_cached() == 2);
  CHECK(bm.num_used() == 0);
  auto again = bm.match_prefix(prompt, 10);
  CHECK(again.size() == 2);
}

TEST_CASE("cached pages are evicted least recently freed first, tails before heads",
          "[engine][block_manager][prefix]") {
  std::mt19937_64 rng(3);
  BlockManager bm(4, 2, true);
  auto p1 = random_tokens(rng, 4, 50);
  BlockTable a;
  REQUIRE(bm.reserve(a, 4));
  bm.commit(a, p1, 4);
  bm.release(a);
  CHECK(bm.num_cached() == 2);
  // Needing three pages: both plain pages, then the tail page of p1 (freed first) is evicted.
  BlockTable b;
  REQUIRE(bm.reserve(b, 6));
  CHECK(bm.num_cached() == 1);
  auto p1_plus = p1;
  p1_plus.push_back(1);
  CHECK(bm.match_prefix(p1_plus, 4).size() == 1);
  CHECK_FALSE(bm.reserve(b, 10));  // needs two more pages, one is free: unchanged
  CHECK(b.size() == 3);
  REQUIRE(bm.check_invariants({&b}).empty());
}

TEST_CASE("prefix cache off: no matches, freed pages go back to the plain pool",
          "[engine][block_manager]") {
  std::mt19937_64 rng(5);
  BlockManager bm(8, 4, false);
  auto p = random_tokens(rng, 9, 100);
  BlockTable a;
  REQUIRE(bm.reserve(a, 9));
  bm.commit(a, p, 9);
  CHECK(bm.match_prefix(p, 8).empty());
  bm.release(a);
  CHECK(bm.num_cached() == 0);
  CHECK(bm.num_free() == 8);
}
