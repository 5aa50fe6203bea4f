// CUDA paged attention (latent, K/V and the generic path) against the CPU reference: random bf16
// cache behind shuffled page tables, lengths on and just past page boundaries, single tokens,
// several query tokens per sequence, 100K contexts, odd head counts, NaN-poisoned outputs, and
// batched output equal to each sequence run alone.
#include "paged_attention_check.h"

using namespace mlra;
using namespace mlra::gputest;
using namespace mlra::gputest::paged;

TEST_CASE("latent attention (MLRA-4 TP4 shape) over page sizes and boundary lengths",
          "[gpu][attention][latent]") {
  for (int ps : {16, 32, 64, 128, 256}) {
    // exactly on a page boundary, just past one, a single token, and a mixed batch
    check_against_cpu(latent(1, 64, 128, ps), {{4 * ps}}, AttentionPath::kLatent128);
    check_against_cpu(latent(1, 64, 128, ps), {{4 * ps + 1}}, AttentionPath::kLatent128);
  }
  check_against_cpu(latent(1, 64, 128, 64), {{1}}, AttentionPath::kLatent128);
  check_against_cpu(latent(1, 64, 128, 64), {{1, 64, 65, 3000, 129}}, AttentionPath::kLatent128);
}

TEST_CASE("latent attention: several query tokens per sequence (chunked-prefill tail)",
          "[gpu][attention][latent]") {
  check_against_cpu(latent(1, 64, 128, 64), {{70, 900, 5}, 7}, AttentionPath::kLatent128);
  check_against_cpu(latent(1, 32, 256, 32), {{129, 1000}, 5}, AttentionPath::kLatent256);
}

TEST_CASE("latent attention: d_c 256 and 512, odd head counts, several latents per row",
          "[gpu][attention][latent]") {
  check_against_cpu(latent(1, 32, 256, 64), {{2000, 65}}, AttentionPath::kLatent256);
  check_against_cpu(latent(1, 16, 512, 64), {{1500, 64}}, AttentionPath::kLatent512);
  check_against_cpu(latent(1, 7, 512, 128), {{333}}, AttentionPath::kLatent512);
  // MLRA-4 at TP1: 4 latents in the row, 5 heads each (odd tiles with different offsets).
  check_against_cpu(latent(4, 5, 128, 64), {{700, 1, 129}}, AttentionPath::kLatent128);
  // More than 64 heads on one latent: two tiles.
  check_against_cpu(latent(1, 72, 128, 64), {{513}}, AttentionPath::kLatent128);
}

TEST_CASE("latent attention: wide latents (GLA-2, MLA) over page sizes and boundary lengths",
          "[gpu][attention][latent][wide]") {
  // 64 heads fill a CTA's rows (MLA TP1 / GLA-2 TP1 per latent); lengths on and just past a
  // 64-row tile and a page, a single token, and a mixed batch.
  for (int d_c : {256, 512}) {
    const auto path = d_c == 256 ? AttentionPath::kLatent256 : AttentionPath::kLatent512;
    for (int ps : {16, 32, 64, 128, 256}) {
      check_against_cpu(latent(1, 64, d_c, ps), {{2 * ps, 2 * ps + 1}}, path);
      check_against_cpu(latent(1, 64, d_c, ps), {{1, 63, 64, 65, 777}}, path);
    }
    // GLA-2 / MLA with several latents per cache row (TP1 rows of GLA-2) and 128 heads (two tiles).
    check_against_cpu(latent(2, 48, d_c, 64), {{1000, 3}}, path);
    check_against_cpu(latent(1, 128, d_c, 64), {{4000}}, path);
    // Prefill-style queries (packed tokens) and a long context split over many chunks.
    check_against_cpu(latent(1, 32, d_c, 64), {{3000, 70}, 33}, path);
    check_against_cpu(latent(1, 64, d_c, 64), {{65537}}, path);
  }
}

TEST_CASE("latent attention: 100K context (many split-KV chunks)",
          "[gpu][attention][latent][long]") {
  check_against_cpu(latent(1, 64, 128, 64), {{100000}}, AttentionPath::kLatent128);
  check_against_cpu(latent(1, 8, 512, 64), {{100001, 4097}}, AttentionPath::kLatent512);
}

TEST_CASE("kv attention (MHA/GQA/MQA, d 128) over page sizes and boundary lengths",
          "[gpu][attention][kv]") {
  for (int ps : {16, 64, 256}) {
    // GQA TP8 (8 q heads on one KV head): exactly on a page boundary, just past one, one token.
    check_against_cpu(kv(8, 1, 128, ps), {{4 * ps}}, kv_path());
    check_against_cpu(kv(8, 1, 128, ps), {{4 * ps + 1}}, kv_path());
    check_against_cpu(kv_split(12, 3, 128, ps), {{1, ps, ps + 1, 3 * ps - 1}}, kv_path());
  }
  check_against_cpu(kv(8, 1, 128, 64), {{1}}, kv_path());
  // A tile's last position on a 64-row tile boundary and just past one, inside one large page.
  check_against_cpu(kv(8, 1, 128, 256), {{64, 65, 129, 192}}, kv_path());
}

TEST_CASE("kv attention: MHA, GQA, MQA, odd head counts, several sequences",
          "[gpu][attention][kv]") {
  check_against_cpu(kv(3, 3, 128, 64), {{64, 65, 1}, 2}, kv_path());         // MHA, 1-row tiles
  check_against_cpu(kv_split(4, 4, 128, 16), {{300, 17, 2000}}, kv_path());  // MHA, model layout
  check_against_cpu(kv(12, 3, 128, 64), {{1000, 17, 64, 129}}, kv_path());   // GQA 4 per KV head
  check_against_cpu(kv_split(8, 2, 128, 16), {{1000, 17}}, kv_path());       // GQA
  check_against_cpu(kv(5, 1, 128, 32), {{777, 32, 33}}, kv_path());          // MQA, 5 heads
  check_against_cpu(kv(7, 7, 128, 64), {{200}}, kv_path());                  // odd MHA
  check_against_cpu(kv_split(16, 1, 128, 64), {{513, 3}}, kv_path());        // 16 rows: full
  check_against_cpu(kv_split(24, 1, 128, 64), {{1025, 70}}, kv_path());      // MQA: 2 tiles
  check_against_cpu(kv(15, 5, 128, 128), {{4096, 1, 333}}, kv_path());       // odd GQA
  // f32 output from bf16 q and cache.
  Layout f = kv_split(8, 2, 128, 64);
  f.out_dtype = DType::kF32;
  check_against_cpu(f, {{650, 9}}, kv_path());
}

TEST_CASE("kv attention: several query tokens per sequence", "[gpu][attention][kv]") {
  check_against_cpu(kv(8, 1, 128, 64), {{70, 900, 5}, 7}, kv_path());
  check_against_cpu(kv_split(12, 3, 128, 16), {{129, 3000}, 5}, kv_path());
  check_against_cpu(kv(3, 3, 128, 256), {{600, 256}, 17}, kv_path());
  // Packed rows: 16 tokens of 8 heads per prefill CTA, rows masked at their own causal end.
  check_against_cpu(kv(8, 1, 128, 64), {{1101, 300, 65}, 33}, kv_path());
  check_against_cpu(kv(5, 1, 128, 16), {{4097, 77}, 9}, kv_path());
}

TEST_CASE(
    "prefill kernel: 128 packed rows per CTA, K/V, latent-128 and expanded latents, pages, "
    "boundaries, splits",
    "[gpu][attention][prefill]") {
  auto& [cpu, gpu] = backends();
  struct Case {
    Layout l;
    Problem p;
    AttentionPath path;
  };
  const AttentionPath kv128 = kv_path(), lat = AttentionPath::kLatent128,
                      ex = AttentionPath::kKvRope128;
  const std::vector<Case> cases = {
      {kv(8, 1, 128, 64), {{1101, 300, 65}, 200}, kv128},          // GQA TP8: 16 tokens x 8 heads
      {kv(3, 3, 128, 16), {{700, 129}, 129}, kv128},               // MHA: 128 tokens, pages of 16
      {kv_split(12, 3, 128, 256), {{2000, 128}, 128}, kv128},      // GQA 4 per KV head
      {kv(5, 1, 128, 32), {{4097, 77}, 77}, kv128},                // MQA, 5 heads: 25 tokens
      {kv(24, 1, 128, 64), {{3000}, 1000}, kv128},                 // MQA, 24 heads: 5 tokens
      {kv(7, 7, 128, 128), {{64, 65, 127, 128, 129}, 60}, kv128},  // ends on and past tiles
      {kv_split(8, 2, 128, 64), {{40000, 300}, 3}, kv128},         // few tokens: split chunks
      {latent(1, 24, 128, 64), {{1101, 300, 65}, 200}, lat},       // 2.9B TP1 heads: 5 tokens
      {latent(4, 24, 128, 16), {{3000, 129}, 129}, lat},           // MLRA-4 TP1: 4 latents
      {latent(1, 64, 128, 256), {{2000}, 500}, lat},               // MLRA-4 TP4: 2 tokens
      {latent(1, 16, 128, 128), {{64, 65, 127, 128, 129}, 60}, lat},
      {latent(2, 5, 128, 64), {{40000, 300}, 3}, lat},  // few tokens: split chunks
      {expanded(24, 64), {{1101, 300, 65}, 200}, ex},   // MLA TP1 heads, one head per tile
      {expanded(6, 16), {{3000, 129}, 129}, ex},        // MLA TP4, pages of 16
      {expanded(12, 256), {{2000}, 500}, ex},           // GLA-2 TP2 heads
      {expanded(5, 128), {{64, 65, 127, 128, 129}, 60}, ex},
      {expanded(3, 64), {{40000, 300}, 3}, ex},  // few tokens: split chunks
  };
  for (const Case& c : cases) {
    const uint32_t seed = fresh_seed();
    INFO("seed " << seed << " heads " << c.l.heads << " a " << c.l.a_dim << " r " << c.l.r_dim
                 << " page " << c.l.page_size << " queries/seq " << c.p.queries_per_seq);
    std::mt19937 rng(seed);
    const Host h = build(c.l, c.p, rng);
    const KernelOptions defaults;
    const Run g = run(*gpu, c.l, h, int(c.p.seq_len.size()), &defaults);
    const Run r = run(*cpu, c.l, h, int(c.p.seq_len.size()));
    CHECK(g.path == c.path);
    CHECK(g.prefill);
    CHECK(all_finite(g.out));
    CHECK(rel_l2(g.out, r.out) < kBf16Tol);
  }
}

TEST_CASE("kv attention: long contexts (split-KV chunks)", "[gpu][attention][kv][long]") {
  check_against_cpu(kv(8, 1, 128, 64), {{20000}}, kv_path());  // GQA TP8, batch 1
  check_against_cpu(kv_split(8, 1, 128, 256), {{65536, 8193, 100}}, kv_path());
  check_against_cpu(kv_split(16, 4, 128, 16), {{12289, 8192}}, kv_path());
}

TEST_CASE("generic attention: MFA, GTA and tiny dims", "[gpu][attention][generic]") {
  check_against_cpu(kv(5, 1, 256, 32), {{777, 32}, 3}, AttentionPath::kGeneric);   // MFA
  check_against_cpu(kv(4, 2, 16, 16), {{33, 16, 2}, 4}, AttentionPath::kGeneric);  // tiny
  Layout tiny = latent(2, 3, 8, 16);                                               // tiny latent
  tiny.r_dim = 4;
  tiny.row_width = 2 * 8 + 4;
  check_against_cpu(tiny, {{50, 16, 1}, 3}, AttentionPath::kGeneric);
  // GTA: per KV head [s (64) | u (64)], rope key after all heads; a = s, v = [s | u].
  Layout gta;
  gta.heads = 6;
  gta.a_dim = 64;
  gta.r_dim = 64;
  gta.v_dim = 128;
  gta.row_width = 2 * 128 + 64;
  gta.r_offset = 256;
  gta.page_size = 64;
  for (int h = 0; h < 6; ++h) {
    gta.a_off.push_back(h / 3 * 128);
    gta.v_off.push_back(h / 3 * 128);
  }
  check_against_cpu(gta, {{300, 64}, 2}, AttentionPath::kGeneric);
  // f32 query and output through the generic path.
  Layout f = kv(4, 2, 64, 32);
  f.q_dtype = f.out_dtype = DType::kF32;
  check_against_cpu(f, {{100, 31}}, AttentionPath::kGeneric);
}

TEST_CASE("batched paged attention equals each sequence alone", "[gpu][attention]") {
  auto& [cpu, gpu] = backends();
  (void)cpu;
  const uint32_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937 rng(seed);
  for (const Layout& l : {latent(1, 64, 128, 64), kv(8, 2, 128, 64)}) {
    const Problem p{{70, 5000, 129, 1}, 2};
    const Host all = build(l, p, rng);
    const Run batched = run(*gpu, l, all, int(p.seq_len.size()));
    const int64_t row = int64_t(l.heads) * l.v_dim;
    for (size_t s = 0; s < p.seq_len.size(); ++s) {
      // The same cache and page table, but only sequence s's tokens (and page-table entry).
      Host one = all;
      one.token_seq.clear();
      one.token_pos.clear();
      one.q.clear();
      std::vector<float> want;
      for (int t = 0; t < all.num_tokens; ++t) {
        if (all.token_seq[t] != int32_t(s)) continue;
        one.token_seq.push_back(0);
        one.token_pos.push_back(all.token_pos[t]);
        const int64_t qw = int64_t(l.heads) * (l.a_dim + l.r_dim);
        one.q.insert(one.q.end(), all.q.begin() + t * qw, all.q.begin() + (t + 1) * qw);
        want.insert(want.end(), batched.out.begin() + t * row, batched.out.begin() + (t + 1) * row);
      }
      one.num_tokens = int(one.token_pos.size());
      one.indptr = {0, all.indptr[s + 1] - all.indptr[s]};
      one.indices.assign(all.indices.begin() + all.indptr[s],
                         all.indices.begin() + all.indptr[s + 1]);
      const Run alone = run(*gpu, l, one, 1);
      INFO("sequence " << s);
      CHECK(rel_l2(alone.out, want) < 5e-3);
    }
  }
}
