// Token sampling as a device op: one token per logits row, with penalties, temperature, top_k,
// top_p, min_p, a seeded draw and raw logprobs. The CPU reference (sampling_cpu.cpp) and the CUDA
// version (sampling.cu, sampling_cuda.cpp) implement TokenSampler with the same semantics, so with
// identical logits both pick the same token: the draw is uniform_from(seed, index)
// (counter_rng.h), candidates are ordered by (logit desc, token id asc), and only columns below
// text_vocab are ever chosen. The op reads a step's sampling rows through SamplingView; the
// owning batch type belongs to the caller (the engine's step plan).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <type_traits>
#include <vector>

#include "kernels/backend.h"
#include "kernels/counter_rng.h"
#include "kernels/tensor.h"

namespace mlra {

// Below this temperature 1/T overflows the logits: the row is greedy (as vLLM does).
inline constexpr float kGreedyTemperature = 1e-5f;

// How one logits row is sampled. Order: repetition penalty (HF: divide positive, multiply
// negative scores), frequency/presence penalties (OpenAI), then greedy argmax when temperature <
// kGreedyTemperature, else temperature, top_k, top_p, min_p (vLLM order) and an inverse-CDF draw.
struct SamplingRow {
  float temperature = 1.0f;
  int32_t top_k = 0;                // <= 0 or >= text_vocab: off
  float top_p = 1.0f;               // (0, 1]
  float min_p = 0.0f;               // [0, 1]
  float repetition_penalty = 1.0f;  // 1: off
  float frequency_penalty = 0.0f;
  float presence_penalty = 0.0f;
  int32_t logprobs = -1;  // < 0: none; n >= 0: the chosen token's and the n best
  uint64_t seed = 0;
  uint64_t index = 0;  // generated-token index: the draw is uniform_from(seed, index)

  MLRA_HOST_DEVICE bool greedy() const { return temperature < kGreedyTemperature; }
  MLRA_HOST_DEVICE bool truncates(int64_t text_vocab) const {
    return (top_k > 0 && top_k < text_vocab) || top_p < 1.0f || min_p > 0.0f;
  }
};
static_assert(std::is_trivially_copyable_v<SamplingRow>);

// The sampling rows of a step as the op reads them: row r samples logits row r. Penalty history
// of row r is entries [penalty_indptr[r], penalty_indptr[r + 1]): distinct token ids, each with
// how often it was generated. The repetition penalty applies to every listed token, frequency /
// presence to those with count > 0. A view: the arrays belong to the caller.
struct SamplingView {
  std::span<const SamplingRow> rows;        // [R]
  std::span<const int32_t> penalty_indptr;  // [R + 1]
  std::span<const int32_t> penalty_tokens;  // [E]
  std::span<const int32_t> penalty_counts;  // [E]

  int64_t size() const { return int64_t(rows.size()); }
  // Throws std::invalid_argument when the arrays disagree (decoded or hand-built batches).
  void check() const;
};

// One sampled token per row, plus logprobs for rows that asked (raw model log-softmax over the
// text vocabulary, before penalties, temperature and truncation).
struct SampledTokens {
  std::vector<int32_t> tokens;         // [R]
  std::vector<float> logprobs;         // [R] chosen token's logprob; 0 where not asked
  std::vector<int32_t> top_indptr{0};  // [R + 1]
  std::vector<int32_t> top_tokens;     // a row's n best, highest first (ties: lower id first)
  std::vector<float> top_logprobs;

  int64_t size() const { return int64_t(tokens.size()); }
  void clear() {
    tokens.clear();
    logprobs.clear();
    top_indptr.assign(1, 0);
    top_tokens.clear();
    top_logprobs.clear();
  }
  // Throws std::invalid_argument when the arrays disagree.
  void check(int64_t rows) const;
};

class TokenSampler {
 public:
  virtual ~TokenSampler() = default;
  // logits: [R, cols >= text_vocab] f32 where this sampler's device reads (host memory for the
  // CPU sampler, the GPU for the CUDA one); R == batch.size(). Replaces `out`.
  virtual void sample(const MatView& logits, const SamplingView& batch, SampledTokens& out) = 0;
};

std::unique_ptr<TokenSampler> make_cpu_token_sampler(int64_t text_vocab);
#ifdef MLRA_HAVE_CUDA
// Samples logits that live on `backend`'s GPU, on its stream; only the results come back.
std::unique_ptr<TokenSampler> make_cuda_token_sampler(Backend& backend, int64_t text_vocab);
#endif

// The sampler for logits living where `backend` computes (inline: the CUDA choice exists only in
// targets that link the CUDA kernels, like make_cuda_backend's callers).
inline std::unique_ptr<TokenSampler> make_token_sampler(Backend& backend, int64_t text_vocab) {
#ifdef MLRA_HAVE_CUDA
  if (backend.kind() == DeviceKind::kCuda) return make_cuda_token_sampler(backend, text_vocab);
#endif
  (void)backend;
  return make_cpu_token_sampler(text_vocab);
}

}  // namespace mlra
