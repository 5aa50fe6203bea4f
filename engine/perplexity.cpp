// Perplexity over contiguous windows; each window is one prefill step with logits for every
// position, using the same pages again for the next window (positions restart at 0).
#include "engine/perplexity.h"

#include <cmath>
#include <cstring>
#include <fstream>
#include <stdexcept>

namespace mlra {
namespace {

// log-sum-exp of logits[0 .. n)
double log_sum_exp(const float* logits, int64_t n) {
  double mx = -INFINITY;
  for (int64_t i = 0; i < n; ++i) mx = std::max(mx, double(logits[i]));
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += std::exp(double(logits[i]) - mx);
  return mx + std::log(s);
}

}  // namespace

double PerplexityResult::perplexity() const {
  return std::exp(mean_nll);
}
double PerplexityResult::perplexity_masked() const {
  return std::exp(mean_nll_masked);
}

std::vector<int32_t> read_token_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open token file " + path.string());
  int32_t header[256];
  if (!in.read(reinterpret_cast<char*>(header), sizeof(header)))
    throw std::runtime_error(path.string() + ": shorter than the 1024-byte header");
  if (header[0] != 20240520)
    throw std::runtime_error(path.string() + ": bad magic (want 20240520)");
  if (header[1] != 1) throw std::runtime_error(path.string() + ": unsupported version");
  const int64_t n = header[2];
  if (n < 0) throw std::runtime_error(path.string() + ": negative token count");
  std::vector<uint16_t> raw(static_cast<size_t>(n));
  if (!in.read(reinterpret_cast<char*>(raw.data()), std::streamsize(n * 2)))
    throw std::runtime_error(path.string() + ": truncated (header says " + std::to_string(n) +
                             " tokens)");
  return {raw.begin(), raw.end()};
}

PerplexityResult evaluate_perplexity(ModelRunner& runner, const std::vector<int32_t>& tokens,
                                     int32_t context, int64_t max_windows, int32_t prefill) {
  const RunnerInfo info = runner.info();
  const int64_t V = runner.config().vocab_size, Vt = runner.config().text_vocab_size;
  const int32_t ps = info.page_size;
  const int32_t pages = (context + ps - 1) / ps;
  if (pages > info.num_pages)
    throw std::invalid_argument("perplexity: context does not fit in the cache");
  if (context < 1 || int64_t(tokens.size()) < context + 1)
    throw std::invalid_argument("perplexity: need at least context + 1 tokens");
  if (prefill < 0 || prefill >= context)
    throw std::invalid_argument("perplexity: prefill must be in [0, context)");
  PerplexityResult r;
  double nll = 0, nll_masked = 0, nll_continuation = 0;
  std::vector<float> logits, part;
  // Positions [begin, end) of window s as one step of sequence 0 (its pages: [0, pages)).
  auto run_part = [&](int64_t s, int32_t begin, int32_t end) {
    StepBatch step;
    step.page_indptr = {0, pages};
    for (int32_t p = 0; p < pages; ++p) step.page_indices.push_back(p);
    for (int32_t t = begin; t < end; ++t) {
      step.tokens.push_back(tokens[size_t(s + t)]);
      step.positions.push_back(t);
      step.token_seq.push_back(0);
      step.slots.push_back(t);
      step.logit_rows.push_back(t - begin);
    }
    runner.execute(step, part);
    logits.insert(logits.end(), part.begin(), part.end());
  };
  for (int64_t s = 0; s + context + 1 <= int64_t(tokens.size()) && r.windows < max_windows;
       s += context) {
    logits.clear();
    if (prefill > 0) run_part(s, 0, prefill);
    run_part(s, prefill, context);
    for (int32_t t = 0; t < context; ++t) {
      const float* row = logits.data() + int64_t(t) * V;
      const int32_t y = tokens[size_t(s + t + 1)];
      const double loss = log_sum_exp(row, V) - row[y];
      nll += loss;
      nll_masked += log_sum_exp(row, Vt) - row[y];
      if (prefill > 0 && t >= prefill) nll_continuation += loss;
    }
    r.tokens += context;
    if (prefill > 0) r.continuation_tokens += context - prefill;
    ++r.windows;
  }
  r.mean_nll = nll / double(r.tokens);
  r.mean_nll_masked = nll_masked / double(r.tokens);
  if (r.continuation_tokens > 0)
    r.mean_nll_continuation = nll_continuation / double(r.continuation_tokens);
  return r;
}

}  // namespace mlra
