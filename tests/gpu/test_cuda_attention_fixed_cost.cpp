// The decode attention kernels' fixed-cost options (kernels/README.md, "Decode attention's fixed
// cost"): attention_early_stream (PDL launch, first cache tiles requested before the wait) and
// attention_inline_merge (the CTA completing a split group merges it). Neither may change a bit:
// under every combination the latent-128, latent-256/512 (packed rows too) and K/V-128 decode
// kernels, bf16 and FP8 caches, batch 1 long contexts that split into many chunks and batch 4,
// must return the default path's output exactly (the default is checked against the CPU), on the
// plan kernel's own step (no early streaming) and on later layers reusing the plan (early
// streaming), again and again (the merge counters return to 0), and replayed from a CUDA graph of
// a two-layer step.
#include <cstring>

#include "fp8_test_util.h"
#include "paged_attention_check.h"

using namespace mlra;
using namespace mlra::gputest;
using namespace mlra::gputest::paged;

namespace {

struct Variant {
  const char* name;
  bool early, inline_merge;
  KernelOptions options() const {
    KernelOptions o;
    o.attention_early_stream = early;
    o.attention_inline_merge = inline_merge;
    return o;
  }
};
constexpr Variant kVariants[] = {
    {"early stream", true, false}, {"inline merge", false, true}, {"both", true, true}};

std::vector<float> download_rows(Backend& gpu, const PagedAttentionArgs& a) {
  const int64_t w = int64_t(a.num_heads) * a.v_dim;
  return download(gpu, {a.out, a.out_dtype, a.num_tokens, w, w});
}

// Runs a through an own instance with options `o` inside one step, `calls` times (the first plans,
// the rest reuse the plan), the output poisoned before each; returns each call's output. Checks
// which options applied: early streaming from the second call on, on decode kernels only.
std::vector<std::vector<float>> run_calls(const PagedAttentionArgs& a, const Tensor& out,
                                          const KernelOptions& o, int calls) {
  Backend& gpu = *backends().gpu;
  cuda::CudaPagedAttention attn(0, o);
  std::vector<std::vector<float>> outs;
  attn.begin_step();
  for (int c = 0; c < calls; ++c) {
    poison(gpu, out);
    gpu.synchronize();
    attn.plan(a, nullptr);
    attn.run(a, nullptr);
    MLRA_CUDA_CHECK(cudaStreamSynchronize(nullptr));
    const bool decode_kernel =
        attn.path() != AttentionPath::kGeneric && !attn.uses_prefill_kernel();
    INFO("call " << c);
    CHECK(attn.ran_early_stream() == (o.attention_early_stream && decode_kernel && c > 0));
    CHECK(attn.ran_inline_merge() == (o.attention_inline_merge && decode_kernel));
    outs.push_back(download_rows(gpu, a));
  }
  attn.end_step();
  return outs;
}

// Every variant's outputs, call by call, against the defaults' bits.
void check_variants(const PagedAttentionArgs& a, const Tensor& out,
                    const std::vector<float>& reference) {
  for (const Variant& v : kVariants) {
    INFO(v.name);
    for (const std::vector<float>& got : run_calls(a, out, v.options(), 3)) {
      CHECK(all_finite(got));
      CHECK(got == reference);
    }
  }
}

// bf16 cache: defaults against the CPU, every variant against the defaults.
void check_bf16(const Layout& l, const Problem& p, AttentionPath expected) {
  auto& [cpu, gpu] = backends();
  const uint32_t seed = fresh_seed();
  INFO("seed " << seed << " heads " << l.heads << " d " << l.a_dim << " page " << l.page_size
               << " batch " << p.seq_len.size() << " queries/seq " << p.queries_per_seq);
  std::mt19937 rng(seed);
  const Host h = build(l, p, rng);
  const int seqs = int(p.seq_len.size());
  Bound bd = bind(*gpu, l, h, seqs);
  gpu->synchronize();
  CHECK(cuda::CudaPagedAttention::choose_path(bd.a) == expected);
  const std::vector<float> reference = run_calls(bd.a, bd.out, KernelOptions{}, 1).front();
  CHECK(all_finite(reference));
  CHECK(rel_l2(reference, run(*cpu, l, h, seqs).out) < kBf16Tol);
  check_variants(bd.a, bd.out, reference);
}

}  // namespace

TEST_CASE("decode attention options: early streaming and inline merge keep every bit (bf16)",
          "[gpu][attention][options][fixed_cost]") {
  const Problem batch1{{20000}}, batch4{{9000, 3000, 129, 64}};
  // MLRA-4 TP4 (64 heads on one latent), GLA-2 TP2, MLA TP8, GQA TP8 / TP4.
  check_bf16(latent(1, 64, 128, 64), batch1, AttentionPath::kLatent128);
  check_bf16(latent(1, 64, 128, 64), batch4, AttentionPath::kLatent128);
  check_bf16(latent(4, 16, 128, 16), {{5000, 700}}, AttentionPath::kLatent128);
  check_bf16(latent(1, 32, 256, 64), batch1, AttentionPath::kLatent256);
  check_bf16(latent(1, 32, 256, 16), batch4, AttentionPath::kLatent256);
  check_bf16(latent(1, 16, 512, 64), batch1, AttentionPath::kLatent512);
  check_bf16(latent(1, 16, 512, 64), batch4, AttentionPath::kLatent512);
  check_bf16(kv_split(8, 1, 128, 64), batch1, AttentionPath::kKv128);
  check_bf16(kv_split(8, 2, 128, 16), batch4, AttentionPath::kKv128);
  // Multi-token steps: the wide kernel's packed rows (early tiles end below the first query
  // token's position; a packed group merges inline), and the prefill kernel (no option applies).
  check_bf16(latent(1, 16, 256, 64), {{6000, 200}, 9}, AttentionPath::kLatent256);
  check_bf16(latent(1, 24, 512, 64), {{5000, 130}, 19}, AttentionPath::kLatent512);
  check_bf16(latent(1, 24, 128, 64), {{3000, 100}, 20}, AttentionPath::kLatent128);
}

TEST_CASE("decode attention options: early streaming and inline merge keep every bit (fp8)",
          "[gpu][attention][options][fixed_cost][fp8]") {
  auto& [cpu, gpu] = backends();
  struct Shape {
    const char* name;
    Fp8CacheLayout layout;
    int32_t a_dim, r_dim, heads;
    AttentionPath path;
  };
  const Shape shapes[] = {
      {"latent-128", {1, 128, 64}, 128, 64, 64, AttentionPath::kLatent128},
      {"latent-256", {1, 256, 64}, 256, 64, 32, AttentionPath::kLatent256},
      {"latent-512", {1, 512, 64}, 512, 64, 16, AttentionPath::kLatent512},
      // Two KV heads of four query heads: K groups 0, 1, V groups 2, 3.
      {"kv-128", {4, 128, 0}, 128, 0, 8, AttentionPath::kKv128},
  };
  const uint32_t seed = fresh_seed();
  std::mt19937 rng(seed);
  for (const Shape& s : shapes)
    for (const std::vector<int32_t>& lens :
         {std::vector<int32_t>{12000}, std::vector<int32_t>{5000, 1500, 129, 64}}) {
      INFO("seed " << seed << " " << s.name << " batch " << lens.size());
      const bool latent = s.r_dim > 0;
      const int32_t ps = 64, W = int32_t(s.layout.values());
      std::vector<int32_t> indptr{0}, indices, slots, step_seq, step_pos;
      for (int32_t n : lens) {
        for (int32_t q = 0; q < (n + ps - 1) / ps; ++q) indices.push_back(int32_t(indices.size()));
        indptr.push_back(int32_t(indices.size()));
      }
      std::reverse(indices.begin(), indices.end());  // a sequence's pages are not contiguous
      for (size_t q = 0; q < lens.size(); ++q) {
        for (int32_t p = 0; p < lens[q]; ++p)
          slots.push_back(indices[size_t(indptr[q] + p / ps)] * ps + p % ps);
        step_seq.push_back(int32_t(q));
        step_pos.push_back(lens[q] - 1);
      }
      const int64_t n = int64_t(slots.size());
      Fp8Pair cache(s.layout, ps, int64_t(indices.size()) + 1);
      Tensor src = make(*cpu, {n, W}, DType::kF32,
                        spanning_rows(rng, n, s.layout.values(), s.layout.group_width));
      cpu->cache_write(as_mat(src, W), slots.data(), cache.view(cache.cpu), 0);
      cache.upload();
      const int32_t T = int32_t(lens.size()), qw = s.a_dim + s.r_dim, vd = s.a_dim;
      const std::vector<float> q = rounded(random_vec(rng, size_t(T * s.heads * qw)), DType::kBF16);
      auto args = [&](Backend& b, const PagedCacheView& view, DType act,
                      std::vector<Tensor>& keep) {
        keep = {make(b, {T, s.heads * qw}, act, q),
                b.alloc({T, s.heads * vd}, act),
                make_i32(b, step_seq),
                make_i32(b, step_pos),
                make_i32(b, indptr),
                make_i32(b, indices)};
        PagedAttentionArgs a;
        a.kernel = latent ? AttentionKernel::kLatent : AttentionKernel::kKv;
        a.q = keep[0].data;
        a.q_dtype = act;
        a.q_token_stride = s.heads * qw;
        a.q_head_stride = qw;
        a.num_tokens = T;
        a.num_heads = s.heads;
        a.a_dim = s.a_dim;
        a.r_dim = s.r_dim;
        a.v_dim = vd;
        for (int32_t h = 0; h < s.heads; ++h) {
          const int32_t g = latent ? 0 : h / 4;
          a.a_offset.push_back(g * s.a_dim);
          a.v_offset.push_back(latent ? 0 : (2 + g) * vd);
        }
        a.r_offset = int32_t(s.layout.quantized());
        a.cache = view;
        a.token_seq = keep[2].as<int32_t>();
        a.token_pos = keep[3].as<int32_t>();
        a.page_indptr = keep[4].as<int32_t>();
        a.page_indices = keep[5].as<int32_t>();
        a.num_seqs = T;
        a.scale = 0.07f;
        a.out = keep[1].data;
        a.out_dtype = act;
        a.out_token_stride = s.heads * vd;
        a.out_head_stride = vd;
        return a;
      };
      std::vector<Tensor> keep_c, keep_g;
      const PagedAttentionArgs ac = args(*cpu, cache.view(cache.cpu), DType::kF32, keep_c);
      const PagedAttentionArgs ag = args(*gpu, cache.view(cache.gpu), DType::kBF16, keep_g);
      gpu->synchronize();
      CHECK(cuda::CudaPagedAttention::choose_path(ag) == s.path);
      cpu->paged_attention(ac);
      const std::vector<float> want = download(*cpu, as_mat(keep_c[1], s.heads * vd));
      const std::vector<float> reference = run_calls(ag, keep_g[1], KernelOptions{}, 1).front();
      CHECK(all_finite(reference));
      CHECK(rel_l2(reference, want) < kBf16Tol);
      check_variants(ag, keep_g[1], reference);
    }
}

TEST_CASE("decode attention options: a two-layer step recorded in a CUDA graph, replayed twice",
          "[gpu][attention][options][fixed_cost][graph]") {
  auto& [cpu, gpu] = backends();
  const uint32_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937 rng(seed);
  for (const Layout& l :
       {latent(1, 64, 128, 64), latent(1, 16, 512, 64), kv_split(8, 1, 128, 64)}) {
    INFO("heads " << l.heads << " d " << l.a_dim);
    const Problem p{{15000}};
    // Two layers over the same step metadata (positions, page tables), each its own cache and q.
    const Host h1 = build(l, p, rng);
    Host h2 = h1;
    const Host fresh = build(l, p, rng);
    h2.cache = fresh.cache;
    h2.q = fresh.q;
    Bound layer1 = bind(*gpu, l, h1, 1), layer2 = bind(*gpu, l, h2, 1);
    layer2.a.token_seq = layer1.a.token_seq;
    layer2.a.token_pos = layer1.a.token_pos;
    layer2.a.page_indptr = layer1.a.page_indptr;
    layer2.a.page_indices = layer1.a.page_indices;
    gpu->synchronize();
    const std::vector<float> want1 = run_calls(layer1.a, layer1.out, KernelOptions{}, 1).front();
    const std::vector<float> want2 = run_calls(layer2.a, layer2.out, KernelOptions{}, 1).front();
    CHECK(rel_l2(want1, run(*cpu, l, h1, 1).out) < kBf16Tol);
    CHECK(rel_l2(want2, run(*cpu, l, h2, 1).out) < kBf16Tol);
    for (const Variant& v : kVariants) {
      INFO(v.name);
      cuda::CudaPagedAttention attn(0, v.options());
      cudaStream_t stream = nullptr;
      MLRA_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
      auto step = [&] {
        attn.begin_step();
        attn.plan(layer1.a, stream);
        attn.run(layer1.a, stream);
        attn.plan(layer2.a, stream);
        attn.run(layer2.a, stream);
        CHECK(attn.ran_early_stream() == v.early);  // layer 2 reuses layer 1's plan
        attn.end_step();
      };
      step();  // eager: sizes the workspace and the counters before the recording
      MLRA_CUDA_CHECK(cudaStreamSynchronize(stream));
      CHECK(download_rows(*gpu, layer1.a) == want1);
      CHECK(download_rows(*gpu, layer2.a) == want2);
      MLRA_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
      step();
      cudaGraph_t graph = nullptr;
      MLRA_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
      cudaGraphExec_t exec = nullptr;
      MLRA_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
      for (int replay = 0; replay < 2; ++replay) {
        INFO("replay " << replay);
        poison(*gpu, layer1.out);
        poison(*gpu, layer2.out);
        gpu->synchronize();
        MLRA_CUDA_CHECK(cudaGraphLaunch(exec, stream));
        MLRA_CUDA_CHECK(cudaStreamSynchronize(stream));
        CHECK(download_rows(*gpu, layer1.a) == want1);
        CHECK(download_rows(*gpu, layer2.a) == want2);
      }
      MLRA_CUDA_CHECK(cudaGraphExecDestroy(exec));
      MLRA_CUDA_CHECK(cudaGraphDestroy(graph));
      MLRA_CUDA_CHECK(cudaStreamDestroy(stream));
    }
  }
}
