// Scheduler: decodes, then chunked prefills, then FCFS admissions under a token budget (header).
#include "engine/scheduler.h"

#include <algorithm>
#include <stdexcept>

namespace mlra {

Scheduler::Scheduler(BlockManager& blocks, SchedulerOptions options)
    : blocks_(blocks), options_(options) {
  if (options_.max_running_seqs <= 0 || options_.max_step_tokens <= 0) {
    throw std::invalid_argument("scheduler limits must be positive");
  }
}

void Scheduler::add(Sequence* seq) {
  seq->status = SequenceStatus::kWaiting;
  waiting_.push_back(seq);
}

Sequence* Scheduler::pick_victim(const ScheduledStep& out) const {
  for (auto it = running_.rbegin(); it != running_.rend(); ++it) {
    const bool scheduled = std::any_of(out.seqs.begin(), out.seqs.end(),
                                       [&](const ScheduledSeq& s) { return s.seq == *it; });
    if (!scheduled) return *it;
  }
  return nullptr;
}

void Scheduler::preempt(Sequence* seq, ScheduledStep& out) {
  blocks_.release(seq->block_table);
  seq->num_computed = 0;
  seq->status = SequenceStatus::kWaiting;
  ++seq->num_preemptions;
  running_.erase(std::find(running_.begin(), running_.end(), seq));
  waiting_.push_front(seq);
  out.preempted.push_back(seq);
  ++num_preemptions_;
}

bool Scheduler::schedule_running(Sequence* seq, int32_t num_tokens, ScheduledStep& out) {
  while (!blocks_.reserve(seq->block_table, int64_t{seq->num_computed} + num_tokens)) {
    Sequence* victim = pick_victim(out);
    if (victim == nullptr)
      throw std::logic_error("scheduler: no victim although seq is unscheduled");
    preempt(victim, out);
    if (victim == seq) return false;
  }
  out.seqs.push_back({seq, num_tokens, seq->num_computed + num_tokens == seq->size()});
  return true;
}

bool Scheduler::try_admit(Sequence* seq, int32_t budget, ScheduledStep& out) {
  // Prompt logprobs need every prompt position computed: no prefix reuse for such a request.
  const int32_t reusable = seq->params.prompt_logprobs >= 0 ? 0 : seq->size() - 1;
  std::vector<int32_t> matched = blocks_.match_prefix(seq->tokens, reusable);
  const int32_t cached_tokens = static_cast<int32_t>(matched.size()) * blocks_.page_size();
  const int32_t n = std::min(seq->size() - cached_tokens, budget);
  const int64_t new_pages =
      blocks_.pages_for(int64_t{cached_tokens} + n) - static_cast<int64_t>(matched.size());
  if (blocks_.num_free_among(matched) + new_pages > blocks_.num_free()) return false;

  blocks_.acquire_prefix(seq->block_table, matched);
  seq->num_computed = cached_tokens;
  if (!blocks_.reserve(seq->block_table, int64_t{cached_tokens} + n)) {
    throw std::logic_error("scheduler: reserve failed after the capacity check");
  }
  if (seq->num_cached_prompt < 0) seq->num_cached_prompt = std::min(cached_tokens, seq->num_prompt);
  prefix_hit_tokens_ += cached_tokens;
  prefix_query_tokens_ += seq->size();
  waiting_.pop_front();
  seq->status = SequenceStatus::kRunning;
  running_.push_back(seq);
  out.seqs.push_back({seq, n, cached_tokens + n == seq->size()});
  return true;
}

ScheduledStep Scheduler::schedule() {
  ScheduledStep out;
  int32_t budget = options_.max_step_tokens;
  const std::vector<Sequence*> snapshot = running_;
  // Decodes first: one token each, so many sequences advance every step.
  for (Sequence* seq : snapshot) {
    if (budget == 0) break;
    if (seq->status != SequenceStatus::kRunning || seq->num_uncomputed() != 1) continue;
    if (schedule_running(seq, 1, out)) --budget;
  }
  // Then prefills already under way, in chunks.
  for (Sequence* seq : snapshot) {
    if (budget == 0) break;
    if (seq->status != SequenceStatus::kRunning || seq->num_uncomputed() <= 1) continue;
    const int32_t n = std::min(seq->num_uncomputed(), budget);
    if (schedule_running(seq, n, out)) budget -= n;
  }
  // Then admissions, strictly first come first served; none in a step that had to preempt.
  while (out.preempted.empty() && budget > 0 && !waiting_.empty() &&
         static_cast<int32_t>(running_.size()) < options_.max_running_seqs) {
    Sequence* seq = waiting_.front();
    const size_t before = out.seqs.size();
    if (!try_admit(seq, budget, out)) break;
    budget -= out.seqs[before].num_tokens;
  }
  if (!out.empty()) build_batch(out);
  return out;
}

void Scheduler::build_batch(ScheduledStep& out) const {
  StepBatch& b = out.batch;
  b.step = step_counter_;
  const int32_t ps = blocks_.page_size();
  b.page_indptr.push_back(0);
  for (size_t s = 0; s < out.seqs.size(); ++s) {
    const ScheduledSeq& sch = out.seqs[s];
    const Sequence& seq = *sch.seq;
    for (int32_t i = 0; i < sch.num_tokens; ++i) {
      const int32_t pos = seq.num_computed + i;
      b.tokens.push_back(seq.tokens[pos]);
      b.positions.push_back(pos);
      b.token_seq.push_back(static_cast<int32_t>(s));
      b.slots.push_back(seq.block_table.pages[pos / ps] * ps + pos % ps);
    }
    if (sch.sample) b.logit_rows.push_back(b.num_tokens() - 1);
    const int32_t num_pages = blocks_.pages_for(int64_t{seq.num_computed} + sch.num_tokens);
    b.page_indices.insert(b.page_indices.end(), seq.block_table.pages.begin(),
                          seq.block_table.pages.begin() + num_pages);
    b.page_indptr.push_back(static_cast<int32_t>(b.page_indices.size()));
  }
}

void Scheduler::on_step_done(const ScheduledStep& step) {
  for (const ScheduledSeq& s : step.seqs) {
    Sequence* seq = s.seq;
    seq->num_computed += s.num_tokens;
    blocks_.commit(seq->block_table, seq->tokens, seq->num_computed);
  }
  ++step_counter_;
}

void Scheduler::finish(Sequence* seq) {
  if (auto it = std::find(running_.begin(), running_.end(), seq); it != running_.end()) {
    running_.erase(it);
  } else if (auto wit = std::find(waiting_.begin(), waiting_.end(), seq); wit != waiting_.end()) {
    waiting_.erase(wit);
  }
  blocks_.release(seq->block_table);
  seq->status = SequenceStatus::kFinished;
}

}  // namespace mlra
