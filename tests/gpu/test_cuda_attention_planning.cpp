// CUDA attention planning against the CPU reference: the split-KV plan reused across layers,
// query packing of prefill chunks, the split-KV merge at odd head dims, each requested kernel
// family's fallback to the generic kernel, and the K/V split kernel option.
#include "paged_attention_check.h"

using namespace mlra;
using namespace mlra::gputest;
using namespace mlra::gputest::paged;

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
namespace {

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

}  // namespace

TEST_CASE("query packing: the plan packs multi-token sequences only, packed equals one per step",
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
