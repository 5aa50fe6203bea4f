// CUDA TokenSampler: uploads the step's sampling rows and penalty lists in one copy, runs
// prepare -> (stable segmented sort of the truncating rows) -> draw on the backend's stream and
// downloads only token ids and logprobs. Scratch lives in the backend's stream-ordered pool.
#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "kernels/cuda_backend.h"
#include "kernels/cuda_check.h"
#include "kernels/sampling.h"
#include "kernels/sampling_cuda.h"

namespace mlra {
namespace {

// Top-n logprobs per row the kernel serves (the engine allows 20).
constexpr int32_t kMaxTopLogprobs = 256;

size_t align8(size_t n) {
  return (n + 7) & ~size_t(7);
}

class CudaTokenSampler final : public TokenSampler {
 public:
  CudaTokenSampler(Backend& backend, int64_t text_vocab)
      : backend_(backend), stream_(cuda_stream_of(backend)), vocab_(text_vocab) {
    if (vocab_ <= 0) throw std::invalid_argument("cuda sampler needs a positive vocabulary size");
  }

  void sample(const MatView& logits, const SamplingView& batch, SampledTokens& out) override {
    batch.check();
    if (logits.dtype != DType::kF32)
      throw std::invalid_argument("cuda sampler: logits must be f32");
    if (logits.rows != batch.size() || logits.cols < vocab_)
      throw std::invalid_argument("cuda sampler: logits are " + std::to_string(logits.rows) +
                                  " x " + std::to_string(logits.cols) + " for " +
                                  std::to_string(batch.size()) + " rows of text vocabulary " +
                                  std::to_string(vocab_));
    out.clear();
    const auto R = int32_t(batch.size());
    if (R == 0) return;
    int32_t max_top = 0;
    std::vector<int32_t> seg_begin, seg_end;
    for (int32_t r = 0; r < R; ++r) {
      const SamplingRow& row = batch.rows[size_t(r)];
      if (row.logprobs > kMaxTopLogprobs)
        throw std::invalid_argument("cuda sampler: at most " + std::to_string(kMaxTopLogprobs) +
                                    " top logprobs");
      max_top = std::max(max_top, row.logprobs);
      if (!row.greedy() && row.truncates(vocab_)) {
        seg_begin.push_back(int32_t(int64_t(r) * vocab_));
        seg_end.push_back(int32_t(int64_t(r) * vocab_ + vocab_));
      }
    }
    const auto S = int32_t(seg_begin.size());

    // One upload: [rows | indptr | tokens | counts | segment begins | segment ends].
    std::vector<char> staged;
    auto put = [&](const void* p, size_t bytes) {
      const size_t at = align8(staged.size());
      staged.resize(at + bytes);
      if (bytes) std::memcpy(staged.data() + at, p, bytes);
      return at;
    };
    const size_t o_rows = put(batch.rows.data(), batch.rows.size() * sizeof(SamplingRow));
    const size_t o_indptr = put(batch.penalty_indptr.data(), batch.penalty_indptr.size() * 4);
    const size_t o_tokens = put(batch.penalty_tokens.data(), batch.penalty_tokens.size() * 4);
    const size_t o_counts = put(batch.penalty_counts.data(), batch.penalty_counts.size() * 4);
    const size_t o_begin = put(seg_begin.data(), seg_begin.size() * 4);
    const size_t o_end = put(seg_end.data(), seg_end.size() * 4);
    Tensor inputs = backend_.alloc({int64_t(std::max<size_t>(staged.size(), 8))}, DType::kU8);
    backend_.upload_async(inputs, staged.data(), staged.size());
    const char* in = inputs.as<char>();

    const int64_t RV = int64_t(R) * vocab_;
    Tensor work = backend_.alloc({RV}, DType::kF32), ids = backend_.alloc({RV}, DType::kI32);
    Tensor sorted = S ? backend_.alloc({RV}, DType::kF32) : Tensor{};
    Tensor sorted_ids = S ? backend_.alloc({RV}, DType::kI32) : Tensor{};
    const int64_t top = int64_t(R) * max_top;
    // Results: [tokens R | logprobs R | top tokens R * max_top | top logprobs R * max_top].
    Tensor results = backend_.alloc({2 * R + 2 * top}, DType::kI32);

    cuda::SamplingDeviceArgs a;
    a.logits = static_cast<const float*>(logits.data);
    a.ld = logits.ld;
    a.rows = R;
    a.vocab = int32_t(vocab_);
    a.params = reinterpret_cast<const SamplingRow*>(in + o_rows);
    a.penalty_indptr = reinterpret_cast<const int32_t*>(in + o_indptr);
    a.penalty_tokens = reinterpret_cast<const int32_t*>(in + o_tokens);
    a.penalty_counts = reinterpret_cast<const int32_t*>(in + o_counts);
    a.work = work.as<float>();
    a.ids = ids.as<int32_t>();
    a.sorted = S ? sorted.as<float>() : nullptr;
    a.sorted_ids = S ? sorted_ids.as<int32_t>() : nullptr;
    a.max_top = max_top;
    int32_t* res = results.as<int32_t>();
    a.tokens = res;
    a.logprobs = reinterpret_cast<float*>(res + R);
    a.top_tokens = res + 2 * R;
    a.top_logprobs = reinterpret_cast<float*>(res + 2 * R + top);

    cuda::launch_sampling_prepare(a, stream_);
    if (S > 0) {
      const auto* begin = reinterpret_cast<const int32_t*>(in + o_begin);
      const auto* end = reinterpret_cast<const int32_t*>(in + o_end);
      size_t temp_bytes = 0;
      cuda::sort_sampling_rows(nullptr, temp_bytes, a, S, begin, end, stream_);
      Tensor temp = backend_.alloc({int64_t(std::max<size_t>(temp_bytes, 8))}, DType::kU8);
      cuda::sort_sampling_rows(temp.data, temp_bytes, a, S, begin, end, stream_);
    }
    cuda::launch_sampling_draw(a, stream_);

    host_.resize(size_t(2 * R + 2 * top));
    MLRA_CUDA_CHECK(
        cudaMemcpyAsync(host_.data(), res, host_.size() * 4, cudaMemcpyDeviceToHost, stream_));
    MLRA_CUDA_CHECK(cudaStreamSynchronize(stream_));

    out.tokens.assign(host_.begin(), host_.begin() + R);
    out.logprobs.resize(size_t(R));
    std::memcpy(out.logprobs.data(), host_.data() + R, size_t(R) * 4);
    for (int32_t r = 0; r < R; ++r) {
      const int32_t n = std::min<int32_t>(batch.rows[size_t(r)].logprobs, int32_t(vocab_));
      for (int32_t j = 0; j < n; ++j) {
        const size_t at = size_t(int64_t(r) * max_top + j);
        out.top_tokens.push_back(host_[size_t(2 * R) + at]);
        float lp;
        std::memcpy(&lp, &host_[size_t(2 * R + top) + at], 4);
        out.top_logprobs.push_back(lp);
      }
      out.top_indptr.push_back(int32_t(out.top_tokens.size()));
    }
  }

 private:
  Backend& backend_;
  cudaStream_t stream_;
  int64_t vocab_;
  std::vector<int32_t> host_;  // downloaded results
};

}  // namespace

std::unique_ptr<TokenSampler> make_cuda_token_sampler(Backend& backend, int64_t text_vocab) {
  return std::make_unique<CudaTokenSampler>(backend, text_vocab);
}

}  // namespace mlra
