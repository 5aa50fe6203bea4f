// Prompt logprobs (SamplingParams::prompt_logprobs >= 0: OpenAI's echo + logprobs, how
// lm-evaluation-harness scores loglikelihood tasks). A step that prefills such a sequence runs
// through the runner's raw-logits path with a logits row at every prompt position of it: row p
// scores prompt token p + 1 (raw log-softmax over the text vocabulary, like sampled logprobs).
// The step's sampling rows are sampled from the same logits with the CPU sampler, which picks
// what every runner's sampler picks from identical logits (kernels/sampling.h), so a scoring
// request beside ordinary ones changes none of their tokens.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/model_runner.h"
#include "engine/request.h"
#include "engine/scheduler.h"
#include "kernels/sampling.h"

namespace mlra {

// Scores of one sequence in one step: prompt tokens first_target, first_target + 1, ...
struct PromptScores {
  int32_t first_target = 0;
  std::vector<TokenLogprobs> entries;
};

// True when some sequence of `plan` asks for prompt logprobs and has prompt tokens to score in it.
// Call before the scheduler's on_step_done (it reads each sequence's num_computed).
bool step_scores_prompts(const ScheduledStep& plan);

// Runs `plan` with the extra logits rows, samples `sampling`'s rows into `out` with `sampler`
// (host memory), and returns per plan.seqs[i] its PromptScores (empty entries when none).
std::vector<PromptScores> execute_scoring_step(ModelRunner& runner, TokenSampler& sampler,
                                               const ScheduledStep& plan,
                                               const SamplingBatch& sampling, SampledTokens& out);

// Raw log-softmax of `row` ([>= text_vocab] logits) at `token`, with the n best (logit desc,
// token id asc), as the samplers report them.
TokenLogprobs score_token(const float* row, int64_t text_vocab, int32_t token, int32_t n);

}  // namespace mlra
