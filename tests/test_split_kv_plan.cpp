// The split-KV plan's host reference (kernels/split_kv_plan_host.h): chunks cover every causal
// range exactly once on tile boundaries, the step fits the target when it splits, partial slots
// and the merge list are consistent, and query packing groups exactly the tokens it may. The
// GPU suite checks the device plan against this reference entry for entry.
#include <catch2/catch.hpp>

#include <algorithm>
#include <random>
#include <vector>

#include "kernels/split_kv_plan_host.h"

using namespace mlra::cuda;

namespace {

struct Tokens {
  std::vector<int32_t> pos, seq;
};

// Sequences of random lengths, each bringing `per_seq` tokens at its last positions.
Tokens random_tokens(std::mt19937& rng, int seqs, int max_len, int per_seq) {
  Tokens t;
  std::uniform_int_distribution<int> len(1, max_len);
  for (int s = 0; s < seqs; ++s) {
    const int l = len(rng);
    for (int p = std::max(0, l - per_seq); p < l; ++p) {
      t.pos.push_back(p);
      t.seq.push_back(s);
    }
  }
  return t;
}

// Every invariant of a plan that does not depend on how the chunk length was chosen.
void check_plan(const SplitKvShape& shape, const Tokens& tk, const SplitKvPlanHost& plan) {
  const int n = shape.num_tokens, k = shape.tokens_per_item;
  REQUIRE(int(plan.merges.size()) == n);
  CHECK(int(plan.items.size()) <= shape.max_items());
  CHECK(plan.num_partials <= shape.max_partials());
  CHECK(plan.chunk_tiles >= shape.min_chunk_tiles);
  std::vector<int> covered(size_t(n), 0);
  std::vector<int> slot_used(size_t(plan.num_partials), 0);
  bool any_split = false;
  for (size_t i = 0; i < plan.items.size();) {
    const SplitKvItem first = plan.items[i];
    // The group: one sequence, increasing positions inside one aligned block of k.
    REQUIRE(first.num_tokens >= 1);
    REQUIRE(first.num_tokens <= k);
    for (int j = 1; j < first.num_tokens; ++j) {
      const int u = first.token + j;
      CHECK(tk.seq[size_t(u)] == tk.seq[size_t(first.token)]);
      CHECK(tk.pos[size_t(u)] > tk.pos[size_t(u - 1)]);
      CHECK(tk.pos[size_t(u)] / k == tk.pos[size_t(first.token)] / k);
    }
    const int last = first.token + first.num_tokens - 1;
    // Maximal: the next token could not have joined.
    if (k > 1 && last + 1 < n)
      CHECK_FALSE((tk.seq[size_t(last + 1)] == tk.seq[size_t(last)] &&
                   tk.pos[size_t(last + 1)] > tk.pos[size_t(last)] &&
                   tk.pos[size_t(last + 1)] / k == tk.pos[size_t(last)] / k));
    const int32_t len = std::max(tk.pos[size_t(last)] + 1, 1);
    // Its chunks: consecutive items covering [0, len) on tile boundaries.
    const int count = plan.merges[size_t(first.token)].count;
    REQUIRE(count >= 1);
    REQUIRE(i + size_t(count) <= plan.items.size());
    int32_t expect_begin = 0;
    for (int c = 0; c < count; ++c) {
      const SplitKvItem& it = plan.items[i + size_t(c)];
      CHECK(it.token == first.token);
      CHECK(it.num_tokens == first.num_tokens);
      CHECK(it.kv_begin == expect_begin);
      CHECK(it.kv_begin % kPlanTile == 0);
      CHECK(it.kv_end > it.kv_begin);
      CHECK((it.kv_end % kPlanTile == 0 || it.kv_end == len));
      CHECK((it.kv_end - it.kv_begin) <= plan.chunk_tiles * kPlanTile);
      if (count == 1) {
        CHECK(it.partial == -1);
      } else {
        REQUIRE(it.partial >= 0);
        REQUIRE(it.partial < plan.num_partials);
        CHECK(it.partial == plan.merges[size_t(first.token)].first_partial + c);
        ++slot_used[size_t(it.partial)];
      }
      expect_begin = it.kv_end;
    }
    CHECK(expect_begin == len);
    for (int j = 0; j < first.num_tokens; ++j) {
      const TokenMerge& m = plan.merges[size_t(first.token + j)];
      CHECK(m.count == count);
      CHECK(m.row_block == j);
      CHECK(m.first_partial == plan.merges[size_t(first.token)].first_partial);
      ++covered[size_t(first.token + j)];
    }
    any_split = any_split || count > 1;
    i += size_t(count);
  }
  for (int t = 0; t < n; ++t) CHECK(covered[size_t(t)] == 1);
  for (int u : slot_used) CHECK(u == 1);
  if (any_split) CHECK(int(plan.items.size()) <= shape.target_chunks);
  // The merge list: exactly the tokens of multi-chunk groups, ascending, within its bound.
  std::vector<int32_t> want;
  for (int t = 0; t < n; ++t)
    if (plan.merges[size_t(t)].count > 1) want.push_back(t);
  CHECK(plan.merge_tokens == want);
  CHECK(int(plan.merge_tokens.size()) <= shape.max_merges());
}

}  // namespace

TEST_CASE("split-KV plan: decode batches cover every causal range once and fit the target",
          "[kernels][splitkv]") {
  std::mt19937 rng(2024);
  for (int trial = 0; trial < 200; ++trial) {
    const Tokens tk = random_tokens(rng, 1 + int(rng() % 70), 1 + int(rng() % 300000), 1);
    SplitKvShape shape;
    shape.num_tokens = int32_t(tk.pos.size());
    shape.target_chunks = 1 + int32_t(rng() % 600);
    shape.min_chunk_tiles = 1 + int32_t(rng() % 4);
    INFO("trial " << trial);
    const SplitKvPlanHost plan = plan_split_kv_host(shape, tk.pos, tk.seq);
    check_plan(shape, tk, plan);
    // The chunk is the smallest that fits: one tile less would exceed the target.
    if (plan.chunk_tiles > shape.min_chunk_tiles) {
      int64_t count = 0;
      for (int32_t p : tk.pos)
        count +=
            ((int64_t(p) + kPlanTile) / kPlanTile + plan.chunk_tiles - 2) / (plan.chunk_tiles - 1);
      CHECK(count > shape.target_chunks);
    }
    // Packing changes nothing when every sequence brings one token.
    SplitKvShape packed = shape;
    packed.tokens_per_item = 4;
    const SplitKvPlanHost same = plan_split_kv_host(packed, tk.pos, tk.seq);
    CHECK(same.items == plan.items);
    CHECK(same.merges == plan.merges);
  }
}

TEST_CASE("split-KV plan: query packing groups prefill tokens by aligned position blocks",
          "[kernels][splitkv]") {
  // One sequence prefilling positions 3..9 with k = 2: groups {3}, {4,5}, {6,7}, {8,9}.
  Tokens tk;
  for (int p = 3; p < 10; ++p) {
    tk.pos.push_back(p);
    tk.seq.push_back(0);
  }
  SplitKvShape shape;
  shape.num_tokens = 7;
  shape.target_chunks = 100;
  shape.tokens_per_item = 2;
  const SplitKvPlanHost plan = plan_split_kv_host(shape, tk.pos, tk.seq);
  REQUIRE(plan.items.size() == 4);
  CHECK(plan.items[0] == SplitKvItem{0, 1, 0, 4, -1});
  CHECK(plan.items[1] == SplitKvItem{1, 2, 0, 6, -1});
  CHECK(plan.items[2] == SplitKvItem{3, 2, 0, 8, -1});
  CHECK(plan.items[3] == SplitKvItem{5, 2, 0, 10, -1});
  CHECK(plan.merges[2] == TokenMerge{0, 1, 1});
  CHECK(plan.merge_tokens.empty());
  check_plan(shape, tk, plan);

  // A token of another sequence, a repeated position and a position going back all start groups.
  Tokens odd{{0, 1, 1, 0, 5, 6}, {0, 0, 0, 0, 1, 1}};
  shape.num_tokens = 6;
  shape.tokens_per_item = 8;
  const SplitKvPlanHost p2 = plan_split_kv_host(shape, odd.pos, odd.seq);
  REQUIRE(p2.items.size() == 4);
  CHECK(p2.items[0].num_tokens == 2);  // positions 0, 1
  CHECK(p2.items[1].num_tokens == 1);  // 1 again
  CHECK(p2.items[2].num_tokens == 1);  // back to 0
  CHECK(p2.items[3].num_tokens == 2);  // sequence 1: 5, 6
  check_plan(shape, odd, p2);
}

TEST_CASE(
    "split-KV plan: packed long-context groups split into chunks and list every token "
    "for the merge",
    "[kernels][splitkv]") {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    const int k = 1 << (rng() % 5);  // 1 .. 16
    const Tokens tk =
        random_tokens(rng, 1 + int(rng() % 6), 1 + int(rng() % 100000), 1 + int(rng() % 40));
    SplitKvShape shape;
    shape.num_tokens = int32_t(tk.pos.size());
    shape.target_chunks = 1 + int32_t(rng() % 300);
    shape.min_chunk_tiles = 1 + int32_t(rng() % 3);
    shape.tokens_per_item = k;
    INFO("trial " << trial << " k " << k);
    check_plan(shape, tk, plan_split_kv_host(shape, tk.pos, tk.seq));
  }
}

TEST_CASE(
    "split-KV plan: the prefill kernel's packing (128 rows over 1..128-head tiles: k need not be "
    "a power of two)",
    "[kernels][splitkv]") {
  // k = 128 / heads of a tile: MHA 128, GQA 3/5/8 heads 42/25/16, MQA 24 heads 5, 2.9B TP1
  // latent tiles of 24 heads 5; long prefill chunks of one or a few sequences, target one CTA per
  // SM (no split once the groups alone fill it) or a small one (long chunks split).
  std::mt19937 rng(11);
  const int ks[] = {128, 42, 25, 16, 5, 3};
  for (int trial = 0; trial < 120; ++trial) {
    const int k = ks[trial % 6];
    const Tokens tk =
        random_tokens(rng, 1 + int(rng() % 3), 1 + int(rng() % 40000), 1 + int(rng() % 1500));
    SplitKvShape shape;
    shape.num_tokens = int32_t(tk.pos.size());
    shape.target_chunks = trial % 2 ? 132 : 1 + int32_t(rng() % 16);
    shape.min_chunk_tiles = 2;
    shape.tokens_per_item = k;
    INFO("trial " << trial << " k " << k << " tokens " << tk.pos.size());
    const SplitKvPlanHost plan = plan_split_kv_host(shape, tk.pos, tk.seq);
    check_plan(shape, tk, plan);
    // Every group holds at most k tokens, so its rows (k x heads) fit the kernel's 128.
    for (const SplitKvItem& it : plan.items) CHECK(it.num_tokens <= k);
  }
}
