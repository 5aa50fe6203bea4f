// Arguments of paged attention, shared by the CPU reference and the CUDA kernels.
// One formulation covers every variant: a query head h scores cached token tau with
//   s = scale * (q_a . cache[tau][a_offset[h] : +a_dim] + q_r . cache[tau][r_offset : +r_dim])
// and returns sum_tau softmax(s)_tau * cache[tau][v_offset[h] : +v_dim].
//  - absorbed latent (MLA/GLA/MLRA): a = latent c (d_c), r = shared roped k_pe, v = c again;
//  - MHA/GQA/MQA/MFA: a = K of the head's KV head, no r part, v = V;  GTA: a = s, r = rope key,
//    v = [s | u].
// Token t attends to positions 0..token_pos[t] of sequence token_seq[t] (causal, absolute
// positions), so prefill, chunked prefill, decode and mixed batches are one call.
// The caller names the kernel family its layout was made for (models/ take it from the variant's
// traits); the CUDA backend runs that family where its preconditions hold and the generic kernel
// otherwise. The CPU reference computes the formula above for every family.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/fp8_e4m3.h"
#include "kernels/tensor.h"

namespace mlra {

// How a paged cache stores its values: kPlain, `dtype` elements; kFp8E4M3, the FP8 layout of
// kernels/fp8_e4m3.h (quantized groups with a float32 scale each, then a bf16 tail).
enum class CacheEncoding : uint8_t { kPlain, kFp8E4M3 };

// Page tables in CSR form: sequence s owns pages page_indices[page_indptr[s] .. page_indptr[s+1]).
// Cache position p of sequence s lives in page page_indices[page_indptr[s] + p / page_size], slot
// p % page_size; a token row is `row_width` values wide (offsets below count values, whatever the
// encoding).
struct PagedCacheView {
  void* data = nullptr;       // plain: [num_pages, page_size, row_width]; FP8: num_pages pages of
                              // fp8.page_bytes(page_size) bytes
  DType dtype = DType::kF32;  // plain: the element dtype; FP8: kU8
  int64_t num_pages = 0;
  int32_t page_size = 0;
  int32_t row_width = 0;
  CacheEncoding encoding = CacheEncoding::kPlain;
  Fp8CacheLayout fp8 = {};  // FP8 only; fp8.values() == row_width
};

// Kernel families of paged attention (the CUDA kernels behind each: kernels/README.md).
enum class AttentionKernel {
  kGeneric,  // any layout (GTA, MFA's 256-dim heads, test dims, f32 operands)
  kLatent,   // absorbed latent: a == v = the latent (d_c 128, 256 or 512), r = a shared 64-dim rope
  kKv,       // K and V of each head's KV head at their own columns, head dim 128, no r part
  // Expanded latent prefill: per-head K_nope and V (128 each) at their own columns plus a shared
  // 64-dim rope key; served by the prefill kernel only (multi-token steps).
  kKvSharedRope,
};

struct PagedAttentionArgs {
  AttentionKernel kernel = AttentionKernel::kGeneric;
  // q row of (token t, head h): q + t * q_token_stride + h * q_head_stride; a part then r part.
  const void* q = nullptr;
  DType q_dtype = DType::kF32;
  int64_t q_token_stride = 0;
  int64_t q_head_stride = 0;
  int32_t num_tokens = 0;
  int32_t num_heads = 0;
  int32_t a_dim = 0;
  int32_t r_dim = 0;  // 0 when the key has no shared rope part
  int32_t v_dim = 0;
  // Per-head cache offsets (host arrays, num_heads each; constant for a model).
  std::vector<int32_t> a_offset;
  std::vector<int32_t> v_offset;
  int32_t r_offset = 0;
  PagedCacheView cache;
  // Per-token metadata and page tables (device pointers on the CUDA backend, host on CPU).
  const int32_t* token_seq = nullptr;    // [num_tokens]
  const int32_t* token_pos = nullptr;    // [num_tokens]
  const int32_t* page_indptr = nullptr;  // [num_seqs + 1]
  const int32_t* page_indices = nullptr;
  int32_t num_seqs = 0;
  float scale = 1.0f;
  // out row of (t, h): out + t * out_token_stride + h * out_head_stride, v_dim values.
  void* out = nullptr;
  DType out_dtype = DType::kF32;
  int64_t out_token_stride = 0;
  int64_t out_head_stride = 0;
};

}  // namespace mlra
