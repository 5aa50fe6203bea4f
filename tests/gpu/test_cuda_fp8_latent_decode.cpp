// The FP8 latent decode kernels against the CPU reference on the same bytes: the wide kernel
// (kernels/latent_wide_attention.cu, d_c 256 and 512, its pipelined schedule) and the latent-128
// kernel (latent_decode_attention.cu, decode steps only: multi-token steps of d_c 128 run on the
// prefill kernel). MLA's shape (d_c 512: 64 and 128 query heads per latent, one and two head
// tiles), GLA-2's (d_c 256, 128-row tiles) and MLRA-4's (d_c 128); batch 1 (one long sequence
// split into many chunks), 16 and 64, and 300 sequences of 1..64 tokens (one tile each: no
// sequence can split, so every item writes its rows directly); decode and multi-token steps,
// packed rows in the wide kernel; caches whose values span the E4M3 range (fp8_test_util.h:
// outliers, tiny rows, all-zero groups) times a per-token magnitude. Each case runs twice in one
// step (the second call reuses the plan) and must return the same bits both times (a race between
// one tile's conversion and another's wgmmas would show). Moderate inputs (magnitudes 2^-12 .. 1,
// query rows of amax about 1 and 1e-3): against the CPU reference (the FP8 attention tests'
// tolerance, and token by token; at 128 heads the batch-16 and 300-sequence cases only, the
// reference being one thread). Extreme inputs (magnitudes 2^-14 .. 2^12, query rows of amax 1e4):
// finite and repeatable only, as the scores then reach ~1e12, where the two backends' summation
// orders flip near-ties. Each case's plan (split_kv_plan_host.h, the device plan's reference)
// tells which kinds of item ran: every kernel must have run both split chunks (partials and the
// merge) and whole sequences. Tagged apart from [fp8], whose run has a time budget
// (scripts/fp8_check.sh).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <random>
#include <vector>

#include "fp8_test_util.h"
#include "kernels/cuda_check.h"
#include "kernels/paged_attention_cuda.h"
#include "paged_attention_check.h"

using namespace mlra;
using namespace mlra::gputest;

namespace {

using cuda::AttentionPath;

struct Case {
  int32_t d_c, heads, page_size;
  std::vector<int32_t> lens;
  int32_t queries_per_seq = 1;  // > 1: a multi-token step (tokens_per_item > 1 below 64 heads)
  bool extreme = false;         // extreme inputs: finite and repeatable only
  bool cpu = true;              // moderate inputs: against the CPU
};

// Which kinds of item a case's plan had: chunks of a split sequence, whole sequences.
struct Coverage {
  bool split = false, unsplit = false;
};

// spanning_rows times a per-token magnitude of the latent group: 2^k for k in [-12, 0] (extreme:
// [-14, 12]) on rows that spanning_rows leaves at normal size, every seventh token's group zero.
std::vector<float> spanning_scale_rows(std::mt19937& rng, int64_t n, const Fp8CacheLayout& l,
                                       bool extreme) {
  std::vector<float> v = spanning_rows(rng, n, l.values(), l.group_width);
  std::uniform_int_distribution<int> exponent(extreme ? -14 : -12, extreme ? 12 : 0);
  for (int64_t r = 0; r < n; ++r) {
    if (r % 3 == 1) continue;  // tiny already (E4M3 subnormals after scaling)
    const float mag = r % 7 == 3 ? 0.0f : std::ldexp(1.0f, exponent(rng));
    for (int64_t c = 0; c < l.quantized(); ++c) v[size_t(r * l.values() + c)] *= mag;
  }
  return v;
}

std::vector<float> download_rows(Backend& gpu, const PagedAttentionArgs& a) {
  const int64_t w = int64_t(a.num_heads) * a.v_dim;
  return download(gpu, {a.out, a.out_dtype, a.num_tokens, w, w});
}

// Runs a through an own instance twice inside one step (the first call plans, the second reuses
// the plan), the output poisoned before each; both calls must give the same bits. Returns the
// output and, from the plan's host reference over the step's positions, which kinds of item ran.
std::vector<float> run_twice(const PagedAttentionArgs& a, const Tensor& out,
                             const std::vector<int32_t>& step_pos,
                             const std::vector<int32_t>& step_seq, Coverage& ran) {
  Backend& gpu = *backends().gpu;
  cuda::CudaPagedAttention attn(0, KernelOptions{});
  std::vector<float> first;
  attn.begin_step();
  for (int c = 0; c < 2; ++c) {
    poison(gpu, out);
    gpu.synchronize();
    attn.plan(a, nullptr);
    attn.run(a, nullptr);
    MLRA_CUDA_CHECK(cudaStreamSynchronize(nullptr));
    std::vector<float> got = download_rows(gpu, a);
    if (c == 0) {
      first = std::move(got);
    } else {
      INFO("the second call, the plan reused");
      CHECK(got == first);
    }
  }
  CHECK(attn.plans_computed() == 1);
  CHECK(!attn.uses_prefill_kernel());
  const cuda::SplitKvPlanHost plan =
      cuda::plan_split_kv_host(attn.plan_shape(), step_pos, step_seq);
  for (const cuda::SplitKvItem& item : plan.items)
    (item.partial >= 0 ? ran.split : ran.unsplit) = true;
  attn.end_step();
  return first;
}

// One case: the kernel against the CPU (moderate inputs), finite and repeatable. Returns which
// kinds of item its plan had.
Coverage check_case(std::mt19937& rng, const Case& k) {
  auto& [cpu, gpu] = backends();
  const Fp8CacheLayout layout{1, k.d_c, 64};
  const int32_t ps = k.page_size, W = int32_t(layout.values());
  std::vector<int32_t> indptr{0}, indices, slots, step_seq, step_pos;
  for (int32_t n : k.lens) {
    for (int32_t q = 0; q < (n + ps - 1) / ps; ++q) indices.push_back(int32_t(indices.size()));
    indptr.push_back(int32_t(indices.size()));
  }
  std::shuffle(indices.begin(), indices.end(), rng);  // a sequence's pages are not contiguous
  for (size_t q = 0; q < k.lens.size(); ++q) {
    for (int32_t p = 0; p < k.lens[q]; ++p)
      slots.push_back(indices[size_t(indptr[q] + p / ps)] * ps + p % ps);
    for (int32_t p = std::max(0, k.lens[q] - k.queries_per_seq); p < k.lens[q]; ++p) {
      step_seq.push_back(int32_t(q));
      step_pos.push_back(p);
    }
  }
  const int64_t n = int64_t(slots.size());
  Fp8Pair cache(layout, ps, int64_t(indices.size()) + 1);
  std::memset(cache.cpu.data, 0xFF, cache.cpu.bytes());  // unwritten rows: NaN codes and scales
  Tensor src = make(*cpu, {n, W}, DType::kF32, spanning_scale_rows(rng, n, layout, k.extreme));
  cpu->cache_write(as_mat(src, W), slots.data(), cache.view(cache.cpu), 0);
  cache.upload();
  const int32_t T = int32_t(step_seq.size()), qw = k.d_c + 64, vd = k.d_c;
  std::vector<float> q = random_vec(rng, size_t(T) * size_t(k.heads * qw));
  for (size_t i = 0; i < q.size(); ++i) {
    const int32_t h = int32_t(i / size_t(qw)) % k.heads;
    q[i] *= h % 3 == 0 ? (k.extreme ? 1e4f : 1.0f) : h % 3 == 1 ? 1e-3f : 1.0f;
  }
  q = rounded(q, DType::kBF16);
  paged::Layout l;
  l.kernel = AttentionKernel::kLatent;
  l.heads = k.heads, l.a_dim = k.d_c, l.r_dim = 64, l.v_dim = vd;
  l.a_off.assign(size_t(k.heads), 0);
  l.v_off.assign(size_t(k.heads), 0);
  l.r_offset = int32_t(layout.quantized());
  l.scale = 0.07f;
  paged::Host h;
  h.q = q, h.token_seq = step_seq, h.token_pos = step_pos, h.indptr = indptr, h.indices = indices;
  h.num_tokens = T;
  const int seqs = int(k.lens.size());
  const paged::Bound bc = paged::bind_step(*cpu, l, h, seqs, cache.view(cache.cpu));
  const paged::Bound bg = paged::bind_step(*gpu, l, h, seqs, cache.view(cache.gpu));
  gpu->synchronize();
  CHECK(cuda::CudaPagedAttention::choose_path(bg.a) == (k.d_c == 512 ? AttentionPath::kLatent512
                                                        : k.d_c == 256
                                                            ? AttentionPath::kLatent256
                                                            : AttentionPath::kLatent128));
  Coverage ran;
  const std::vector<float> got = run_twice(bg.a, bg.out, step_pos, step_seq, ran);
  CHECK(all_finite(got));
  if (!k.extreme && k.cpu) {
    cpu->paged_attention(bc.a);
    const std::vector<float> want = paged::download_out(*cpu, l, h, bc);
    CHECK(rel_l2(got, want) < kBf16Tol);
    // Token by token, so one wrong row (a tile boundary, a box, a split chunk) cannot hide.
    const size_t row = size_t(k.heads * vd);
    for (int32_t t = 0; t < T; ++t) {
      INFO("token " << t << " (sequence " << step_seq[size_t(t)] << ", position "
                    << step_pos[size_t(t)] << ")");
      const std::vector<float> g(got.begin() + t * row, got.begin() + (t + 1) * row),
          w(want.begin() + t * row, want.begin() + (t + 1) * row);
      CHECK(rel_l2(g, w) < 2 * kBf16Tol);
    }
  }
  return ran;
}

// n lengths in [lo, hi].
std::vector<int32_t> lengths(std::mt19937& rng, int n, int32_t lo, int32_t hi) {
  std::uniform_int_distribution<int32_t> len(lo, hi);
  std::vector<int32_t> v(static_cast<size_t>(n));
  for (int32_t& x : v) x = len(rng);
  return v;
}

}  // namespace

TEST_CASE("fp8 latent decode attention: the wide and latent-128 kernels match the cpu",
          "[gpu][attention][fp8_decode]") {
  const uint32_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937 rng(seed);
  std::map<int32_t, Coverage> seen;  // per d_c: the kinds of item that ran
  auto note = [&](int32_t d_c, const Coverage& c) {
    seen[d_c].split = seen[d_c].split || c.split;
    seen[d_c].unsplit = seen[d_c].unsplit || c.unsplit;
  };
  for (const int32_t heads : {64, 128}) {
    // The CPU reference is one thread: at 128 heads it checks the batch-16 and 300-sequence cases
    // of each kernel.
    const bool cpu = heads == 64;
    const std::vector<Case> cases = {
        {512, heads, 64, {12000}, 1, false, cpu},                     // batch 1: many chunks
        {512, heads, 16, lengths(rng, 16, 1, 3000)},                  // TMA boxes of 16 rows
        {512, heads, 64, lengths(rng, 64, 1, 700), 1, false, cpu},    // short sequences
        {512, heads, 64, lengths(rng, 8, 100, 2000), 3, false, cpu},  // three tokens per sequence
        {512, heads, 64, lengths(rng, 300, 1, 64)},                   // one tile each: no split
        {512, heads, 64, lengths(rng, 16, 1, 3000), 1, true},
        {256, heads, 64, lengths(rng, 16, 1, 3000)},
        {256, heads, 64, lengths(rng, 300, 1, 64)},
        {256, heads, 64, lengths(rng, 16, 1, 3000), 1, true},
        {128, heads, 64, {12000}, 1, false, cpu},
        {128, heads, 16, lengths(rng, 16, 1, 3000)},
        {128, heads, 64, lengths(rng, 64, 1, 700), 1, false, cpu},
        {128, heads, 64, lengths(rng, 300, 1, 64)},
        {128, heads, 64, lengths(rng, 16, 1, 3000), 1, true},
    };
    for (const Case& k : cases) {
      INFO("d_c " << k.d_c << ", " << k.heads << " heads, page size " << k.page_size << ", batch "
                  << k.lens.size() << ", " << k.queries_per_seq << " queries per sequence"
                  << (k.extreme ? ", extreme inputs" : ""));
      note(k.d_c, check_case(rng, k));
    }
  }
  // Packed rows (24 heads: two tokens per item) in the wide kernel.
  for (const int32_t d_c : {512, 256})
    for (const bool extreme : {false, true}) {
      INFO("d_c " << d_c << ", 24 heads, packed rows" << (extreme ? ", extreme inputs" : ""));
      note(d_c, check_case(rng, {d_c, 24, 64, lengths(rng, 8, 100, 3000), 3, extreme}));
    }
  // Every kernel ran both kinds of item: split chunks (partials and the merge) and whole sequences.
  for (const int32_t d_c : {512, 256, 128}) {
    INFO("d_c " << d_c);
    CHECK(seen[d_c].split);
    CHECK(seen[d_c].unsplit);
  }
}
