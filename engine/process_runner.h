// Multi-process tensor-parallel ModelRunner: spawns one worker process per rank (fork + exec of
// `<binary> worker --rank r --fd K`), sends each the RunnerConfig whole, and each builds its Rank
// (engine/rank.h: Transformer shard, weights and cache pages) on its device (ranks may share one:
// then they sum through host memory, kernels/host_staged_communicator.h); then drives them in
// explicit lockstep over control channels.
// Rank 0's worker samples its logits where they are, so a step returns token ids (and asked-for
// logprobs), not [rows, vocab] floats; raw-logits steps remain for tools and tests.
// Any lost worker (exit, crash, EOF, timeout, error) is fatal: all workers are killed and reaped,
// execute() throws RunnerError and healthy() is false from then on. No CUDA headers here.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/control_channel.h"
#include "engine/model_runner.h"
#include "engine/runner_factory.h"
#include "kernels/communicator.h"

namespace mlra {

class ShmSegment;

class ProcessRunner final : public ModelRunner {
 public:
  // Spawns and loads all workers; throws RunnerError (after reaping them) if any fails.
  explicit ProcessRunner(const RunnerConfig& config, const WorkerProcessOptions& process = {});
  // Sends Shutdown, waits up to shutdown_timeout_s, then kills and reaps what is left.
  ~ProcessRunner() override;

  const ModelConfig& config() const override { return config_; }
  RunnerInfo info() const override { return info_; }
  void execute(const StepBatch& step, const SamplingBatch& sampling, SampledTokens& out) override;
  void execute(const StepBatch& step, std::vector<float>& logits) override;
  bool healthy() const override;

  std::vector<pid_t> worker_pids() const;  // for tests and logs

 private:
  struct Worker {
    int rank = 0;
    pid_t pid = -1;  // -1 once reaped
    ControlChannel channel;
  };
  void spawn(int rank);
  // Sends every worker the config, relays the NCCL id, and collects each rank's report.
  void load();
  // Sends the step to every rank (rank 0 answers with `reply`) and waits for all answers;
  // read_rank0 consumes rank 0's reply once its header passed the lockstep check.
  void run_step(const StepBatch& step, StepReply reply, const SamplingBatch* sampling,
                const std::function<void(ControlChannel&, const MessageHeader&, Clock::time_point)>&
                    read_rank0);
  // GPU-sized cache: every rank allocates the settled count (settle_gpu_pages). Returns it.
  int64_t allocate_gpu_sized_cache();
  // Calls handle(w) for each worker as soon as its socket is readable, until all were handled;
  // fails on timeout.
  void wait_all(int64_t seq, Clock::time_point deadline, const std::string& what,
                const std::function<void(Worker&)>& handle);
  // Runs fn; a channel or protocol error becomes fail() naming the worker.
  void guarded(Worker& w, const std::string& what, const std::function<void()>& fn);
  // Marks the runner unhealthy, kills and reaps every worker, throws RunnerError(why).
  [[noreturn]] void fail(const std::string& why);
  void kill_all();
  std::string describe_exit(Worker& w);  // reaps w if it exited

  RunnerConfig run_config_;
  WorkerProcessOptions process_;
  ModelConfig config_;
  RunnerInfo info_;
  std::vector<Worker> workers_;
  std::vector<pid_t> pids_;      // fixed after spawning: healthy() reads it from other threads
  std::vector<RankInfo> ready_;  // what each rank reported when it finished loading
  CommunicatorKind comm_kind_ = CommunicatorKind::kSingleRank;
  std::unique_ptr<ShmSegment> shm_;
  std::vector<char*> envp_;
  std::vector<std::string> env_storage_;
  std::atomic<bool> healthy_{true};
  std::string failure_;
  int64_t next_step_ = 1;
};

}  // namespace mlra
