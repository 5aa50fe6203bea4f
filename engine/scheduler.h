// Continuous-batching scheduler: plain, single-threaded, deterministic. Each step it plans
// decodes first, then running prefills in chunks, then FCFS admissions, all under a token budget
// and a running-sequence limit. When pages run out it preempts the lowest-priority (latest
// admitted) unscheduled sequence by recompute: its pages are freed, it is re-queued at the front
// and later recomputes prompt + generated tokens, so its output continues unchanged.
#pragma once

#include <cstdint>
#include <deque>
#include <vector>

#include "engine/block_manager.h"
#include "engine/sequence.h"
#include "models/step_batch.h"

namespace mlra {

struct SchedulerOptions {
  int32_t max_running_seqs = 64;
  int32_t max_step_tokens = 512;
};

struct ScheduledSeq {
  Sequence* seq = nullptr;
  int32_t num_tokens = 0;  // tokens computed this step, starting at seq->num_computed
  bool sample = false;     // the chunk ends at the sequence's last token: sample from its logits
};

struct ScheduledStep {
  StepBatch batch;
  std::vector<ScheduledSeq> seqs;    // in batch order; logit_rows follow the sampled ones
  std::vector<Sequence*> preempted;  // sequences preempted while planning this step
  bool empty() const { return seqs.empty(); }
};

class Scheduler {
 public:
  Scheduler(BlockManager& blocks, SchedulerOptions options);

  void add(Sequence* seq);  // queues at the back (FCFS)
  ScheduledStep schedule();
  // After the step ran: advances num_computed and registers newly full pages for prefix reuse.
  void on_step_done(const ScheduledStep& step);
  // Removes a waiting or running sequence, frees its pages and marks it finished.
  void finish(Sequence* seq);

  bool has_work() const { return !running_.empty() || !waiting_.empty(); }
  const std::vector<Sequence*>& running() const { return running_; }
  const std::deque<Sequence*>& waiting() const { return waiting_; }
  int64_t num_preemptions() const { return num_preemptions_; }
  int64_t prefix_hit_tokens() const { return prefix_hit_tokens_; }
  int64_t prefix_query_tokens() const { return prefix_query_tokens_; }
  int64_t num_steps() const { return step_counter_; }

 private:
  bool schedule_running(Sequence* seq, int32_t num_tokens, ScheduledStep& out);
  bool try_admit(Sequence* seq, int32_t budget, ScheduledStep& out);
  Sequence* pick_victim(const ScheduledStep& out) const;
  void preempt(Sequence* seq, ScheduledStep& out);
  void build_batch(ScheduledStep& out) const;

  BlockManager& blocks_;
  SchedulerOptions options_;
  std::vector<Sequence*> running_;  // admission order = priority order
  std::deque<Sequence*> waiting_;
  int64_t num_preemptions_ = 0;
  int64_t prefix_hit_tokens_ = 0;
  int64_t prefix_query_tokens_ = 0;  // admissions' token counts: the denominator of the hit rate
  int64_t step_counter_ = 0;
};

}  // namespace mlra
