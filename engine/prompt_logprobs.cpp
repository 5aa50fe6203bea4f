// Scoring steps: extra logits rows in the plan's batch, one raw-logits forward, log-softmax for
// the prompt rows and the CPU sampler for the sampling rows (header).
#include "engine/prompt_logprobs.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace mlra {
namespace {

// Prompt positions of `s` scored in this step: [start, end) (row p scores token p + 1).
std::pair<int32_t, int32_t> scored_positions(const ScheduledSeq& s) {
  const Sequence& seq = *s.seq;
  if (seq.params.prompt_logprobs < 0) return {0, 0};
  const int32_t start = seq.num_computed;
  const int32_t end = std::min(start + s.num_tokens, seq.num_prompt - 1);
  return {start, std::max(start, end)};
}

}  // namespace

bool step_scores_prompts(const ScheduledStep& plan) {
  for (const ScheduledSeq& s : plan.seqs) {
    const auto [start, end] = scored_positions(s);
    if (end > start) return true;
  }
  return false;
}

TokenLogprobs score_token(const float* row, int64_t text_vocab, int32_t token, int32_t n) {
  const float max = *std::max_element(row, row + text_vocab);
  double sum = 0;
  for (int64_t v = 0; v < text_vocab; ++v) sum += std::exp(double(row[v]) - max);
  const float log_z = max + static_cast<float>(std::log(sum));
  TokenLogprobs lp;
  lp.token = token;
  lp.logprob = row[token] - log_z;
  if (n > 0) {
    std::vector<int32_t> ids(static_cast<size_t>(text_vocab));
    std::iota(ids.begin(), ids.end(), 0);
    const auto better = [&](int32_t a, int32_t b) {
      return row[a] > row[b] || (row[a] == row[b] && a < b);
    };
    const auto k = std::min<int64_t>(n, text_vocab);
    std::partial_sort(ids.begin(), ids.begin() + k, ids.end(), better);
    for (int64_t i = 0; i < k; ++i) lp.top.push_back({ids[size_t(i)], row[ids[size_t(i)]] - log_z});
  }
  return lp;
}

std::vector<PromptScores> execute_scoring_step(ModelRunner& runner, TokenSampler& sampler,
                                               const ScheduledStep& plan,
                                               const SamplingBatch& sampling, SampledTokens& out) {
  StepBatch step = plan.batch;
  step.logit_rows.clear();
  std::vector<int64_t> sample_rows;  // index into step.logit_rows of each sampling row
  std::vector<PromptScores> scores(plan.seqs.size());
  std::vector<std::pair<size_t, int64_t>> score_rows;  // (seq index, logit row) per scored token
  int32_t offset = 0;  // the sequence's first token index in the batch (sequence-major)
  for (size_t i = 0; i < plan.seqs.size(); ++i) {
    const ScheduledSeq& s = plan.seqs[i];
    const auto [start, end] = scored_positions(s);
    scores[i].first_target = start + 1;
    for (int32_t p = start; p < end; ++p) {
      score_rows.emplace_back(i, int64_t(step.logit_rows.size()));
      step.logit_rows.push_back(offset + (p - s.seq->num_computed));
    }
    if (s.sample) {
      sample_rows.push_back(int64_t(step.logit_rows.size()));
      step.logit_rows.push_back(offset + s.num_tokens - 1);
    }
    offset += s.num_tokens;
  }
  std::vector<float> logits;
  runner.execute(step, logits);
  const int64_t vocab = runner.config().vocab_size;
  const int64_t text_vocab = runner.config().text_vocab_size;
  if (int64_t(logits.size()) != int64_t(step.logit_rows.size()) * vocab) {
    throw RunnerError("runner returned a logits block of the wrong size for a scoring step");
  }
  for (const auto& [i, row] : score_rows) {
    const Sequence& seq = *plan.seqs[i].seq;
    const int32_t target = scores[i].first_target + int32_t(scores[i].entries.size());
    scores[i].entries.push_back(score_token(logits.data() + row * vocab, text_vocab,
                                            seq.tokens[size_t(target)],
                                            seq.params.prompt_logprobs));
  }
  std::vector<float> rows(sample_rows.size() * size_t(vocab));
  for (size_t r = 0; r < sample_rows.size(); ++r) {
    std::copy_n(logits.data() + sample_rows[r] * vocab, vocab, rows.data() + r * size_t(vocab));
  }
  const auto n = int64_t(sample_rows.size());
  sampler.sample(MatView{rows.data(), DType::kF32, n, vocab, vocab}, sampling, out);
  return scores;
}

}  // namespace mlra
