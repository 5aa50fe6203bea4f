// A deterministic ModelRunner for engine tests: it keeps its own "cache" of token ids at the
// slots each step writes, and a logits row is a hash of the sequence's history read back through
// the step's page table. Wrong slots, page tables or prefix reuse therefore change the output,
// and StepBatch shape errors throw std::logic_error. execute() samples those rows with the CPU
// sampling op, as a CPU runner does. Also: fixed string decoder for token text.
#pragma once

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "engine/model_runner.h"
#include "engine/token_stream_decoder.h"
#include "kernels/sampling.h"

namespace mlra::testing {

inline uint64_t fake_mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Logits of the next token after `history` ([n] token ids): independent of batching.
inline void fake_logits(const std::vector<int32_t>& history, int64_t vocab, int64_t text_vocab,
                        float* out) {
  uint64_t h = 0x1234;
  for (int32_t t : history) h = fake_mix(h ^ static_cast<uint32_t>(t));
  for (int64_t v = 0; v < vocab; ++v) {
    const double u =
        static_cast<double>(fake_mix(h ^ (static_cast<uint64_t>(v) << 32)) >> 11) * 0x1.0p-53;
    // Padding rows score highest so a sampler that forgets to exclude them is caught.
    out[v] = v >= text_vocab ? 50.0f : static_cast<float>(6.0 * u - 3.0);
  }
}

struct FakeRunnerOptions {
  int64_t vocab_size = 300;
  int64_t text_vocab_size = 280;
  int64_t eot_token = 279;
  int32_t page_size = 4;
  int64_t num_pages = 64;
  int64_t max_context = 256;
  int64_t fail_at_step = -1;  // throw RunnerError on the first call at or after this one...
  int32_t fail_min_seqs = 0;  // ...whose batch holds at least this many sequences
  std::chrono::milliseconds delay{0};  // per execute(), to give other threads time
};

class FakeModelRunner : public ModelRunner {
 public:
  explicit FakeModelRunner(FakeRunnerOptions o) : o_(o) {
    config_.vocab_size = o.vocab_size;
    config_.text_vocab_size = o.text_vocab_size;
    config_.eot_token = o.eot_token;
    cache_.assign(static_cast<size_t>(o.num_pages * o.page_size), -1);
    sampler_ = make_cpu_token_sampler(o.text_vocab_size);
  }

  const ModelConfig& config() const override { return config_; }
  RunnerInfo info() const override {
    RunnerInfo info;
    info.backend = "fake";
    info.page_size = o_.page_size;
    info.num_pages = o_.num_pages;
    info.max_context = o_.max_context;
    return info;
  }

  void execute(const StepBatch& step, const SamplingBatch& sampling, SampledTokens& out) override {
    execute(step, logits_);
    if (sampling.size() != static_cast<int64_t>(step.logit_rows.size()))
      throw std::logic_error("fake runner: one sampling row per logit row");
    const auto rows = static_cast<int64_t>(step.logit_rows.size());
    sampler_->sample(MatView{logits_.data(), DType::kF32, rows, o_.vocab_size, o_.vocab_size},
                     sampling, out);
  }

  void execute(const StepBatch& step, std::vector<float>& logits) override {
    if (o_.delay.count() > 0) std::this_thread::sleep_for(o_.delay);
    const int64_t call = calls_++;
    if (o_.fail_at_step >= 0 && !failed_ && call >= o_.fail_at_step &&
        step.num_seqs() >= o_.fail_min_seqs) {
      failed_ = true;
      throw RunnerError("fake worker died");
    }
    check_shapes(step);
    for (int32_t t = 0; t < step.num_tokens(); ++t) cache_[step.slots[t]] = step.tokens[t];
    logits.assign(step.logit_rows.size() * static_cast<size_t>(o_.vocab_size), 0.0f);
    for (size_t r = 0; r < step.logit_rows.size(); ++r) {
      const int32_t t = step.logit_rows[r];
      std::vector<int32_t> history = read_history(step, step.token_seq[t], step.positions[t]);
      fake_logits(history, o_.vocab_size, o_.text_vocab_size, logits.data() + r * o_.vocab_size);
    }
    total_tokens_ += step.num_tokens();
  }

  int64_t calls() const { return calls_; }
  int64_t total_tokens() const { return total_tokens_; }

 private:
  std::vector<int32_t> read_history(const StepBatch& step, int32_t seq, int32_t last_pos) const {
    std::vector<int32_t> history;
    for (int32_t pos = 0; pos <= last_pos; ++pos) {
      const int32_t page = step.page_indices[step.page_indptr[seq] + pos / o_.page_size];
      const int32_t token = cache_[static_cast<size_t>(page) * o_.page_size + pos % o_.page_size];
      if (token < 0) throw std::logic_error("fake runner: attended to a never-written cache row");
      history.push_back(token);
    }
    return history;
  }

  void check_shapes(const StepBatch& step) const {
    const size_t n = step.tokens.size();
    if (step.positions.size() != n || step.token_seq.size() != n || step.slots.size() != n) {
      throw std::logic_error("fake runner: per-token arrays differ in length");
    }
    for (size_t t = 0; t < n; ++t) {
      const int32_t s = step.token_seq[t];
      if (s < 0 || s >= step.num_seqs() || (t > 0 && s < step.token_seq[t - 1])) {
        throw std::logic_error("fake runner: tokens not grouped by sequence");
      }
      const int32_t pos = step.positions[t];
      const int32_t num_pages = step.page_indptr[s + 1] - step.page_indptr[s];
      if (pos / o_.page_size >= num_pages)
        throw std::logic_error("fake runner: page table too short");
      const int32_t page = step.page_indices[step.page_indptr[s] + pos / o_.page_size];
      if (step.slots[t] != page * o_.page_size + pos % o_.page_size) {
        throw std::logic_error("fake runner: slot does not match the page table");
      }
    }
    for (int32_t r : step.logit_rows) {
      if (r < 0 || r >= static_cast<int32_t>(n))
        throw std::logic_error("fake runner: bad logit row");
    }
  }

  FakeRunnerOptions o_;
  ModelConfig config_;
  std::vector<int32_t> cache_;  // [num_pages * page_size] token id written at each slot
  std::atomic<int64_t> calls_{0};
  bool failed_ = false;
  int64_t total_tokens_ = 0;
  std::unique_ptr<TokenSampler> sampler_;
  std::vector<float> logits_;
};

// Token t's text: two letters ("ab"), so strings span token boundaries in predictable ways.
inline std::string fake_token_text(int32_t t) {
  return {static_cast<char>('a' + t % 26), static_cast<char>('a' + (t / 26) % 26)};
}

class FakeStreamDecoder : public TokenStreamDecoder {
 public:
  std::string feed(int32_t token) override { return fake_token_text(token); }
  std::string flush() override { return ""; }
};

inline TokenStreamDecoderFactory fake_decoder_factory() {
  return [] { return std::make_unique<FakeStreamDecoder>(); };
}

}  // namespace mlra::testing
