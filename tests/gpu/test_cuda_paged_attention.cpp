// CUDA paged attention (latent, K/V and prefill tensor-core paths and the generic path, split-KV
// plan + merge) against the CPU reference: random bf16 cache behind shuffled page tables, lengths
// on and just past page boundaries, single tokens, several query tokens per sequence, 100K
// contexts, odd head counts, NaN-poisoned outputs, batched output equal to each sequence run
// alone, each requested kernel family's fallback to the generic kernel, and the K/V split option.
#include <catch2/catch.hpp>

#include <algorithm>
#include <numeric>
#include <set>

#include "gpu_test_util.h"
#include "kernels/cuda_check.h"
#include "kernels/paged_attention_cuda.h"
#include "kernels/prefill_attention.h"

using namespace mlra;
using namespace mlra::gputest;
using cuda::AttentionPath;

namespace {

struct Layout {
  AttentionKernel kernel = AttentionKernel::kGeneric;  // the family the layout asks for
  int heads = 1, a_dim = 0, r_dim = 0, v_dim = 0, row_width = 0, r_offset = 0, page_size = 64;
  std::vector<int32_t> a_off, v_off;
  float scale = 0.1f;
  DType q_dtype = DType::kBF16, out_dtype = DType::kBF16;
};

// Absorbed latent layout: `latents` latents of d_c, heads_per_latent heads each, rope after.
Layout latent(int latents, int heads_per_latent, int d_c, int page_size) {
  Layout l;
  l.kernel = AttentionKernel::kLatent;
  l.heads = latents * heads_per_latent;
  l.a_dim = l.v_dim = d_c;
  l.r_dim = 64;
  l.row_width = latents * d_c + 64;
  l.r_offset = latents * d_c;
  l.page_size = page_size;
  for (int h = 0; h < l.heads; ++h) {
    l.a_off.push_back(h / heads_per_latent * d_c);
    l.v_off.push_back(h / heads_per_latent * d_c);
  }
  l.scale = 1.0f / std::sqrt(float(d_c + 64));
  return l;
}

// K/V layout: kv_heads of [K | V] with d each, q heads grouped over them (MHA/GQA/MQA/MFA).
Layout kv(int q_heads, int kv_heads, int d, int page_size) {
  Layout l;
  l.kernel = AttentionKernel::kKv;
  l.heads = q_heads;
  l.a_dim = l.v_dim = d;
  l.row_width = 2 * kv_heads * d;
  l.page_size = page_size;
  for (int h = 0; h < q_heads; ++h) {
    const int g = h / (q_heads / kv_heads);
    l.a_off.push_back(g * 2 * d);
    l.v_off.push_back(g * 2 * d + d);
  }
  l.scale = 1.0f / std::sqrt(float(d));
  return l;
}

// The models' K/V layout (models/kv_attention.cpp): K of every KV head first, then V.
Layout kv_split(int q_heads, int kv_heads, int d, int page_size) {
  Layout l = kv(q_heads, kv_heads, d, page_size);
  for (int h = 0; h < q_heads; ++h) {
    const int g = h / (q_heads / kv_heads);
    l.a_off[h] = g * d;
    l.v_off[h] = (kv_heads + g) * d;
  }
  return l;
}

// Expanded latent prefill (models/latent_expanded_prefill.cpp): rows [K_nope of every head | V of
// every head | k_pe], keys [K_nope | k_pe] (192), values V (128).
Layout expanded(int heads, int page_size) {
  Layout l;
  l.kernel = AttentionKernel::kKvSharedRope;
  l.heads = heads;
  l.a_dim = l.v_dim = 128;
  l.r_dim = 64;
  l.row_width = 2 * heads * 128 + 64;
  l.r_offset = 2 * heads * 128;
  l.page_size = page_size;
  for (int h = 0; h < heads; ++h) {
    l.a_off.push_back(h * 128);
    l.v_off.push_back((heads + h) * 128);
  }
  l.scale = 1.0f / std::sqrt(192.0f);
  return l;
}

// The path K/V caches with head dim 128 take.
constexpr AttentionPath kv_path() {
  return AttentionPath::kKv128;
}

struct Problem {
  std::vector<int32_t> seq_len;  // cached length of each sequence
  int queries_per_seq = 1;       // the last positions of each sequence are the query tokens
};

struct Host {
  std::vector<float> cache, q;
  std::vector<int32_t> token_seq, token_pos, indptr, indices;
  int64_t num_pages = 0;
  int num_tokens = 0;
};

Host build(const Layout& l, const Problem& p, std::mt19937& rng) {
  Host h;
  h.indptr.push_back(0);
  int64_t total_pages = 0;
  for (int32_t len : p.seq_len) total_pages += (len + l.page_size - 1) / l.page_size;
  h.num_pages = total_pages + 3;
  std::vector<int32_t> ids(h.num_pages);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  int64_t next = 0;
  for (size_t s = 0; s < p.seq_len.size(); ++s) {
    const int32_t len = p.seq_len[s];
    for (int32_t i = 0; i < (len + l.page_size - 1) / l.page_size; ++i)
      h.indices.push_back(ids[next++]);
    h.indptr.push_back(int32_t(h.indices.size()));
    for (int k = std::max(0, len - p.queries_per_seq); k < len; ++k) {
      h.token_seq.push_back(int32_t(s));
      h.token_pos.push_back(k);
    }
  }
  h.num_tokens = int(h.token_pos.size());
  h.cache = rounded(random_vec(rng, size_t(h.num_pages) * l.page_size * l.row_width), DType::kBF16);
  h.q =
      rounded(random_vec(rng, size_t(h.num_tokens) * l.heads * (l.a_dim + l.r_dim)), DType::kBF16);
  return h;
}

struct Run {
  std::vector<float> out;
  AttentionPath path = AttentionPath::kGeneric;
  bool prefill = false;  // an own instance ran on the prefill kernel
};

// The device (or host) buffers of one problem and the arguments pointing at them.
struct Bound {
  Tensor cache, q, out, seq, pos, indptr, indices;
  DType out_t = DType::kF32;
  PagedAttentionArgs a;
};

Bound bind(Backend& b, const Layout& l, const Host& h, int num_seqs) {
  const bool gpu = b.kind() == DeviceKind::kCuda;
  const DType cache_t = gpu ? DType::kBF16 : DType::kF32;
  const DType q_t = gpu ? l.q_dtype : DType::kF32, out_t = gpu ? l.out_dtype : DType::kF32;
  const int64_t qw = l.a_dim + l.r_dim;
  Bound bd;
  Tensor& cache = bd.cache = make(b, {h.num_pages, l.page_size, l.row_width}, cache_t, h.cache);
  Tensor& q = bd.q = make(b, {std::max(1, h.num_tokens), l.heads * qw}, q_t, h.q);
  Tensor& out = bd.out = b.alloc({std::max(1, h.num_tokens), int64_t(l.heads) * l.v_dim}, out_t);
  if (gpu) poison(b, out);
  Tensor &seq = bd.seq = make_i32(b, h.token_seq), &pos = bd.pos = make_i32(b, h.token_pos);
  Tensor &indptr = bd.indptr = make_i32(b, h.indptr),
         &indices = bd.indices = make_i32(b, h.indices);
  bd.out_t = out_t;
  PagedAttentionArgs& a = bd.a;
  a.kernel = l.kernel;
  a.q = q.data;
  a.q_dtype = q_t;
  a.q_token_stride = l.heads * qw;
  a.q_head_stride = qw;
  a.num_tokens = h.num_tokens;
  a.num_heads = l.heads;
  a.a_dim = l.a_dim;
  a.r_dim = l.r_dim;
  a.v_dim = l.v_dim;
  a.a_offset = l.a_off;
  a.v_offset = l.v_off;
  a.r_offset = l.r_offset;
  a.cache = {cache.data, cache_t, h.num_pages, l.page_size, l.row_width};
  a.token_seq = seq.as<int32_t>();
  a.token_pos = pos.as<int32_t>();
  a.page_indptr = indptr.as<int32_t>();
  a.page_indices = indices.as<int32_t>();
  a.num_seqs = num_seqs;
  a.scale = l.scale;
  a.out = out.data;
  a.out_dtype = out_t;
  a.out_token_stride = int64_t(l.heads) * l.v_dim;
  a.out_head_stride = l.v_dim;
  return bd;
}

std::vector<float> download_out(Backend& b, const Layout& l, const Host& h, const Bound& bd) {
  const int64_t w = int64_t(l.heads) * l.v_dim;
  return download(b, {bd.out.data, bd.out_t, h.num_tokens, w, w});
}

// Runs through the backend, or (CUDA, `own` set) through an own instance with these kernel
// options, which also reports whether the prefill kernel ran.
Run run(Backend& b, const Layout& l, const Host& h, int num_seqs,
        const KernelOptions* own = nullptr) {
  Bound bd = bind(b, l, h, num_seqs);
  bool used_prefill = false;
  AttentionPath path = cuda::CudaPagedAttention::choose_path(bd.a);
  if (!own || b.kind() != DeviceKind::kCuda) {
    b.paged_attention(bd.a);
  } else {
    b.synchronize();  // the buffers were filled on the backend's stream
    cuda::CudaPagedAttention attn(0, *own);
    attn.plan(bd.a, nullptr);
    attn.run(bd.a, nullptr);
    MLRA_CUDA_CHECK(cudaStreamSynchronize(nullptr));
    used_prefill = attn.uses_prefill_kernel();
    path = attn.path();
  }
  Run r;
  r.prefill = used_prefill;
  r.out = download_out(b, l, h, bd);
  r.path = path;
  return r;
}

void check_against_cpu(const Layout& l, const Problem& p, AttentionPath expected,
                       const KernelOptions* own = nullptr) {
  auto& [cpu, gpu] = backends();
  const uint32_t seed = fresh_seed();
  INFO("seed " << seed << " heads " << l.heads << " a " << l.a_dim << " r " << l.r_dim << " v "
               << l.v_dim << " page " << l.page_size << " queries/seq " << p.queries_per_seq);
  std::mt19937 rng(seed);
  const Host h = build(l, p, rng);
  const Run g = run(*gpu, l, h, int(p.seq_len.size()), own);
  const Run c = run(*cpu, l, h, int(p.seq_len.size()));
  CHECK(std::string(cuda::attention_path_name(g.path)) == cuda::attention_path_name(expected));
  CHECK(all_finite(g.out));
  CHECK(rel_l2(g.out, c.out) < kBf16Tol);
}

}  // namespace

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

TEST_CASE("split-KV plan: computed once per step, reused by every layer, recomputed after",
          "[gpu][attention]") {
  auto& [cpu, gpu] = backends();
  const uint32_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937 rng(seed);
  const Layout l = latent(1, 64, 128, 64);
  const Problem p{{3000, 70, 129}, 1};
  // Two "layers": the same step metadata (positions, page tables), their own cache and queries.
  const Host h1 = build(l, p, rng);
  Host h2 = h1;
  const Host fresh = build(l, p, rng);
  h2.cache = fresh.cache;
  h2.q = fresh.q;
  Bound layer1 = bind(*gpu, l, h1, 3), layer2 = bind(*gpu, l, h2, 3);
  layer2.a.token_seq = layer1.a.token_seq;
  layer2.a.token_pos = layer1.a.token_pos;
  layer2.a.page_indptr = layer1.a.page_indptr;
  layer2.a.page_indices = layer1.a.page_indices;
  gpu->synchronize();
  cuda::CudaPagedAttention attn(0, KernelOptions{});
  auto layer = [&](Bound& bd) {
    attn.plan(bd.a, nullptr);
    attn.run(bd.a, nullptr);
  };
  attn.begin_step();
  layer(layer1);
  layer(layer2);
  layer(layer1);
  CHECK(attn.plans_computed() == 1);
  MLRA_CUDA_CHECK(cudaStreamSynchronize(nullptr));
  const std::vector<float> in_step1 = download_out(*gpu, l, h1, layer1);
  const std::vector<float> in_step2 = download_out(*gpu, l, h2, layer2);
  // Other positions (another buffer) inside the step: a new plan.
  Bound other = bind(*gpu, l, h1, 3);
  gpu->synchronize();
  layer(other);
  CHECK(attn.plans_computed() == 2);
  attn.end_step();
  // Outside a step every call plans, and the outputs are bit-identical to the reused plan's.
  layer(layer1);
  layer(layer2);
  CHECK(attn.plans_computed() == 4);
  MLRA_CUDA_CHECK(cudaStreamSynchronize(nullptr));
  CHECK(download_out(*gpu, l, h1, layer1) == in_step1);
  CHECK(download_out(*gpu, l, h2, layer2) == in_step2);
  CHECK(rel_l2(in_step2, run(*cpu, l, h2, 3).out) < kBf16Tol);
}

TEST_CASE("latent attention: query packing (prefill chunks share each cache tile)",
          "[gpu][attention][latent][packing]") {
  // 24 heads per latent (the 2.9B models at TP1): 5 tokens per prefill CTA. Chunks start on odd
  // and even positions, so groups of every size occur; a whole prompt from position 0 too.
  check_against_cpu(latent(1, 24, 128, 64), {{1101, 300, 65}, 300}, AttentionPath::kLatent128);
  // MLRA-4 at TP1 (4 latents x 24 heads) with long contexts and few tokens: packed groups are
  // split into chunks, so the merge finds each token's rows at its place in the group.
  check_against_cpu(latent(4, 24, 128, 64), {{20000, 9001}, 5}, AttentionPath::kLatent128);
  // d_c 256 (16 heads: 4 tokens per CTA) and 512 (24 heads), page size 16 and 128.
  check_against_cpu(latent(1, 16, 256, 16), {{700, 2}, 37}, AttentionPath::kLatent256);
  check_against_cpu(latent(1, 24, 512, 128), {{5000, 130}, 19}, AttentionPath::kLatent512);
  // 5 heads: 25 tokens per prefill CTA, 125 of 128 rows.
  check_against_cpu(latent(2, 5, 128, 64), {{4097, 77}, 45}, AttentionPath::kLatent128);
}

// The same query tokens as one-token sequences over the same pages: a decode step.
Host as_decode(const Host& h) {
  Host d = h;
  d.token_seq.clear();
  d.indptr = {0};
  d.indices.clear();
  for (int t = 0; t < h.num_tokens; ++t) {
    const int s = h.token_seq[t];
    d.token_seq.push_back(t);
    d.indices.insert(d.indices.end(), h.indices.begin() + h.indptr[s],
                     h.indices.begin() + h.indptr[s + 1]);
    d.indptr.push_back(int32_t(d.indices.size()));
  }
  return d;
}

TEST_CASE("query packing: the plan packs multi-token sequences only; packed equals one per step",
          "[gpu][attention][packing]") {
  auto& [cpu, gpu] = backends();
  (void)cpu;
  const uint32_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937 rng(seed);
  for (const Layout& l : {latent(4, 24, 128, 64), latent(1, 24, 512, 64), kv(8, 1, 128, 64)}) {
    cuda::CudaPagedAttention attn(0, KernelOptions{});
    const Host prefill = build(l, {{300, 4000}, 300}, rng);
    Bound a = bind(*gpu, l, prefill, 2);
    gpu->synchronize();
    attn.plan(a.a, nullptr);
    // 24-head latent tiles: 5 tokens in the prefill kernel's 128 rows, 2 in the wide kernel's
    // 64; one 8-head K/V tile: 16 tokens.
    const int want = l.kernel == AttentionKernel::kKv ? 16 : l.a_dim == 128 ? 5 : 2;
    CHECK(attn.tokens_per_item() == want);
    CHECK(attn.uses_prefill_kernel() == (l.a_dim == 128));
    const Host decode = as_decode(prefill);
    Bound b = bind(*gpu, l, decode, decode.num_tokens);
    gpu->synchronize();
    attn.plan(b.a, nullptr);
    CHECK(attn.tokens_per_item() == 1);
    CHECK_FALSE(attn.uses_prefill_kernel());
    attn.run(b.a, nullptr);
    MLRA_CUDA_CHECK(cudaStreamSynchronize(nullptr));
    // Same inputs, packed and one token per CTA: the same sums in another grouping (bf16 output).
    const std::vector<float> single = download_out(*gpu, l, decode, b);
    const Run packed = run(*gpu, l, prefill, 2);
    CHECK(all_finite(packed.out));
    CHECK(all_finite(single));
    CHECK(rel_l2(packed.out, single) < 5e-3);
  }
}

TEST_CASE("K/V attention: a long prefill chunk (thousands of tokens of one sequence)",
          "[gpu][attention][kv]") {
  // 1,500 query tokens x 4 KV heads: far more CTAs than SMs without any split (a split target
  // growing with the token count would overflow the merge's partial list).
  check_against_cpu(kv(8, 4, 128, 64), {{3000}, 1500}, kv_path());
}

TEST_CASE("split-KV merge: head dims that are not a multiple of 4, and wider than 256",
          "[gpu][attention][generic]") {
  // Long enough to split, so the merge's scalar path (and its two column passes for v 258) runs.
  check_against_cpu(kv(2, 1, 6, 16), {{20000, 300}}, AttentionPath::kGeneric);
  check_against_cpu(kv(2, 1, 258, 16), {{5000}, 2}, AttentionPath::kGeneric);
}

TEST_CASE("requested kernel families fall back to the generic kernel where they do not fit",
          "[gpu][attention][generic]") {
  // A layout a tensor-core kernel could serve, asked for as generic, stays generic.
  Layout asked_generic = latent(1, 16, 128, 64);
  asked_generic.kernel = AttentionKernel::kGeneric;
  check_against_cpu(asked_generic, {{700, 3}}, AttentionPath::kGeneric);
  Layout kv_generic = kv(8, 1, 128, 64);
  kv_generic.kernel = AttentionKernel::kGeneric;
  check_against_cpu(kv_generic, {{700, 3}, 2}, AttentionPath::kGeneric);
  // Latent with a latent width no tensor-core kernel has (TPLA slices of 64) and K/V with head
  // dim 64: the family's preconditions fail.
  check_against_cpu(latent(2, 8, 64, 64), {{500, 65}}, AttentionPath::kGeneric);
  check_against_cpu(kv(4, 2, 64, 32), {{300, 31}}, AttentionPath::kGeneric);
  // A latent layout asked for as K/V (values at the keys' columns) and K/V asked for as latent.
  Layout latent_as_kv = latent(1, 8, 128, 64);
  latent_as_kv.kernel = AttentionKernel::kKv;
  latent_as_kv.r_dim = 0;
  latent_as_kv.row_width = 128;
  latent_as_kv.scale = 0.1f;
  check_against_cpu(latent_as_kv, {{400, 2}}, AttentionPath::kGeneric);
  Layout kv_as_latent = kv(8, 1, 128, 64);
  kv_as_latent.kernel = AttentionKernel::kLatent;
  check_against_cpu(kv_as_latent, {{400, 2}}, AttentionPath::kGeneric);
  // Misaligned cache segments (a 4-element offset breaks the 16-byte rows TMA needs).
  Layout shifted = latent(1, 8, 128, 64);
  shifted.row_width += 4;
  for (auto& o : shifted.a_off) o += 4;
  for (auto& o : shifted.v_off) o += 4;
  shifted.r_offset += 4;
  check_against_cpu(shifted, {{333, 64}}, AttentionPath::kGeneric);
  // The expanded-prefill layout in a decode step (one token per sequence): no decode kernel.
  const KernelOptions defaults;
  check_against_cpu(expanded(6, 64), {{900, 17, 64}}, AttentionPath::kGeneric, &defaults);
}

TEST_CASE("kernel option kv_split_per_sm: the K/V decode split target, checked against the cpu",
          "[gpu][attention][kv][options]") {
  auto& [cpu, gpu] = backends();
  int sms = 0;
  MLRA_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  // The MHA TP8 shape (3 KV heads of one query head each) and GQA TP8 at batch 1..4, long enough
  // contexts that every target splits them.
  const std::vector<std::pair<Layout, Problem>> cases = {
      {kv_split(3, 3, 128, 64), {{30000, 20001, 12000, 7000}}},
      {kv_split(8, 1, 128, 64), {{100000}}},
      {kv_split(8, 2, 128, 16), {{30000, 129}}},
  };
  for (const auto& [l, p] : cases) {
    const uint32_t seed = fresh_seed();
    std::mt19937 rng(seed);
    const Host h = build(l, p, rng);
    const int seqs = int(p.seq_len.size());
    const std::vector<float> want = run(*cpu, l, h, seqs).out;
    const int n_tiles = int(std::set<int32_t>(l.a_off.begin(), l.a_off.end()).size());
    for (int per_sm = 0; per_sm <= KernelOptions::kMaxKvSplitPerSm; ++per_sm) {
      INFO("seed " << seed << " per_sm " << per_sm << " heads " << l.heads << " batch " << seqs);
      KernelOptions o;
      o.kv_split_per_sm = per_sm;
      const Run g = run(*gpu, l, h, seqs, &o);
      CHECK(g.path == AttentionPath::kKv128);
      CHECK(all_finite(g.out));
      CHECK(rel_l2(g.out, want) < kBf16Tol);
      // The option reaches the plan.
      Bound bd = bind(*gpu, l, h, seqs);
      gpu->synchronize();
      cuda::CudaPagedAttention attn(0, o);
      attn.plan(bd.a, nullptr);
      MLRA_CUDA_CHECK(cudaStreamSynchronize(nullptr));
      CHECK(attn.target_chunks() == cuda::kv_split_target(sms, n_tiles, seqs, per_sm));
      if (per_sm > 0) CHECK(attn.target_chunks() == std::max(1, sms * per_sm / n_tiles));
    }
  }
  // Through a backend made with the option, as a runner makes it.
  KernelOptions two;
  two.kv_split_per_sm = 2;
  auto gpu2 = make_cuda_backend(0, two);
  std::mt19937 rng(fresh_seed());
  const Layout l = kv_split(3, 3, 128, 64);
  const Host h = build(l, {{50000, 7000, 1}}, rng);
  CHECK(rel_l2(run(*gpu2, l, h, 3).out, run(*cpu, l, h, 3).out) < kBf16Tol);
  // Out-of-range options are refused with the field's name.
  KernelOptions bad;
  bad.kv_split_per_sm = 3;
  CHECK_THROWS_WITH(make_cuda_backend(0, bad), Catch::Contains("kv_split_per_sm"));
  CHECK_THROWS_WITH(cuda::CudaPagedAttention(0, bad), Catch::Contains("kv_split_per_sm"));
}
