// In-process runner: one Rank per TP rank (threads), steps executed in lockstep, rank 0's logits
// sampled where they are.
#include "engine/local_runner.h"

#include <functional>
#include <thread>

#include <spdlog/spdlog.h>

#include "engine/rank.h"
#include "kernels/sampling.h"
#include "kernels/thread_communicator.h"
#include "models/model_loader.h"

namespace mlra {
namespace {

class LocalRunner final : public ModelRunner {
 public:
  explicit LocalRunner(const RunnerConfig& c) {
    config_ = runner_model_config(c);
    if (c.tp > 1 && c.backend != "cpu")
      throw RunnerError("in-process tp " + std::to_string(c.tp) +
                        " runs on the cpu backend only; backend '" + c.backend +
                        "' takes one worker process per rank");
    const CheckedCheckpoint checked = open_checked_checkpoint(c.model_dir, config_);
    const std::shared_ptr<Checkpoint> checkpoint = checked.checkpoint;
    std::vector<std::unique_ptr<Communicator>> comms;
    if (c.tp == 1)
      comms.push_back(make_single_rank_communicator());
    else
      comms = make_thread_communicators(c.tp);
    std::vector<RankInfo> reports;
    for (int r = 0; r < c.tp; ++r) {
      ranks_.push_back(std::make_unique<Rank>(
          c, config_, *checkpoint, r, [&](Backend&) { return std::move(comms[size_t(r)]); }));
      reports.push_back(ranks_.back()->info());
    }
    checked.checksums->wait();  // the zip CRCs, verified beside the weight upload
    int64_t pages = shared_page_count(c, config_);
    if (c.gpu_memory_fraction > 0) {
      pages = settle_gpu_pages(c, reports);
      for (auto& rank : ranks_) rank->allocate_cache(pages);
    }
    info_ = runner_info(c, config_, std::move(reports), pages);
    spdlog::info(
        "loaded {} ({}) tp={} backend={}: {} pages x {} tokens, cache {} values/token/layer/rank, "
        "weights {:.1f} MB/rank",
        c.model_dir.string(), config_.variant.name(), c.tp, c.backend, pages, c.page_size,
        info_.cache_values_per_token_per_layer, info_.weight_bytes_per_rank / 1e6);
  }

  const ModelConfig& config() const override { return config_; }
  RunnerInfo info() const override { return info_; }

  void execute(const StepBatch& step, const SamplingBatch& sampling, SampledTokens& out) override {
    if (sampling.size() != int64_t(step.logit_rows.size()))
      throw RunnerError("sampling rows (" + std::to_string(sampling.size()) +
                        ") differ from logit rows (" + std::to_string(step.logit_rows.size()) +
                        ")");
    // Rank 0's logits are sampled where they are (host or GPU); only ids come back.
    if (!sampler_) sampler_ = make_token_sampler(ranks_[0]->backend(), config_.text_vocab_size);
    out.clear();
    run_ranks(step, [&](Transformer& rank0) {
      rank0.forward(step, [&](const MatView& logits) { sampler_->sample(logits, sampling, out); });
    });
  }

  void execute(const StepBatch& step, std::vector<float>& logits) override {
    run_ranks(step, [&](Transformer& rank0) { rank0.forward(step, logits); });
  }

 private:
  // Runs `rank0` on this thread and a plain forward of `step` on every other rank's thread.
  void run_ranks(const StepBatch& step, const std::function<void(Transformer&)>& rank0) {
    if (ranks_.size() == 1) return rank0(ranks_[0]->model());
    std::vector<std::thread> threads;
    std::vector<std::exception_ptr> errors(ranks_.size());
    std::vector<std::vector<float>> unused(ranks_.size());
    for (size_t r = 1; r < ranks_.size(); ++r)
      threads.emplace_back([&, r] {
        try {
          ranks_[r]->model().forward(step, unused[r]);
        } catch (...) {
          errors[r] = std::current_exception();
        }
      });
    try {
      rank0(ranks_[0]->model());
    } catch (...) {
      errors[0] = std::current_exception();
    }
    for (auto& t : threads) t.join();
    for (auto& e : errors)
      if (e) std::rethrow_exception(e);
  }

  ModelConfig config_;
  std::vector<std::unique_ptr<Rank>> ranks_;
  RunnerInfo info_;
  std::unique_ptr<TokenSampler> sampler_;  // rank 0's backend's sampling op
};

}  // namespace

std::unique_ptr<ModelRunner> make_local_runner(const RunnerConfig& config) {
  return std::make_unique<LocalRunner>(config);
}

}  // namespace mlra
