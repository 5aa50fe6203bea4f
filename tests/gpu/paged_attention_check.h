// Test helper for the CUDA paged-attention tests: random bf16 caches behind shuffled page tables
// in each kernel family's layout (latent, K/V, expanded), bound to a backend, and the check of
// one step's output against the CPU reference.
#pragma once

#include <catch2/catch.hpp>

#include <algorithm>
#include <numeric>
#include <random>
#include <set>

#include "gpu_test_util.h"
#include "kernels/cuda_check.h"
#include "kernels/paged_attention_cuda.h"
#include "kernels/prefill_attention.h"

namespace mlra::gputest::paged {

using cuda::AttentionPath;

struct Layout {
  AttentionKernel kernel = AttentionKernel::kGeneric;  // the family the layout asks for
  int heads = 1, a_dim = 0, r_dim = 0, v_dim = 0, row_width = 0, r_offset = 0, page_size = 64;
  std::vector<int32_t> a_off, v_off;
  float scale = 0.1f;
  DType q_dtype = DType::kBF16, out_dtype = DType::kBF16;
};

// Absorbed latent layout: `latents` latents of d_c, heads_per_latent heads each, rope after.
inline Layout latent(int latents, int heads_per_latent, int d_c, int page_size) {
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
inline Layout kv(int q_heads, int kv_heads, int d, int page_size) {
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
inline Layout kv_split(int q_heads, int kv_heads, int d, int page_size) {
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
inline Layout expanded(int heads, int page_size) {
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

inline Host build(const Layout& l, const Problem& p, std::mt19937& rng) {
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

// h's queries, output and step arrays bound to a backend over `cache` (any encoding: the FP8
// tests pass an FP8 view); bd.cache stays empty. The CUDA output is poisoned.
inline Bound bind_step(Backend& b, const Layout& l, const Host& h, int num_seqs,
                       const PagedCacheView& cache) {
  const bool gpu = b.kind() == DeviceKind::kCuda;
  const DType q_t = gpu ? l.q_dtype : DType::kF32, out_t = gpu ? l.out_dtype : DType::kF32;
  const int64_t qw = l.a_dim + l.r_dim;
  Bound bd;
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
  a.cache = cache;
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

// bind_step over a cache of h's values (bf16 on CUDA, f32 on the CPU) in l's row layout.
inline Bound bind(Backend& b, const Layout& l, const Host& h, int num_seqs) {
  const DType cache_t = b.kind() == DeviceKind::kCuda ? DType::kBF16 : DType::kF32;
  Tensor cache = make(b, {h.num_pages, l.page_size, l.row_width}, cache_t, h.cache);
  Bound bd =
      bind_step(b, l, h, num_seqs, {cache.data, cache_t, h.num_pages, l.page_size, l.row_width});
  bd.cache = std::move(cache);
  return bd;
}

inline std::vector<float> download_out(Backend& b, const Layout& l, const Host& h,
                                       const Bound& bd) {
  const int64_t w = int64_t(l.heads) * l.v_dim;
  return download(b, {bd.out.data, bd.out_t, h.num_tokens, w, w});
}

// Runs through the backend, or (CUDA, `own` set) through an own instance with these kernel
// options, which also reports whether the prefill kernel ran.
inline Run run(Backend& b, const Layout& l, const Host& h, int num_seqs,
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

inline void check_against_cpu(const Layout& l, const Problem& p, AttentionPath expected,
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

}  // namespace mlra::gputest::paged
