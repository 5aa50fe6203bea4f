// In-process runner: loads one Transformer per TP rank (threads), executes steps in lockstep and
// samples rank 0's logits with the sampling op of rank 0's backend.
#include "models/local_runner.h"

#include <algorithm>
#include <functional>
#include <limits>
#include <thread>

#include <spdlog/spdlog.h>

#include "kernels/backend.h"
#include "kernels/sampling.h"
#include "kernels/thread_communicator.h"
#include "models/cache_shape.h"
#include "models/checkpoint.h"
#include "models/latent_expansion.h"
#include "models/transformer.h"

namespace mlra {
namespace {

class LocalRunner final : public ModelRunner {
 public:
  explicit LocalRunner(const LocalRunnerOptions& o) {
    config_ =
        load_runner_config(o.model_dir, o.variant, o.mla_tp_mode, o.tpla, o.tp, o.latent_prefill);
    ckpt_ = Checkpoint::open(o.model_dir);
    comms_ =
        o.tp == 1 ? std::vector<std::unique_ptr<Communicator>>{} : make_thread_communicators(o.tp);
    if (o.tp == 1) comms_.push_back(make_single_rank_communicator());
    const int64_t widest = widest_cache_width(config_, o.tp);
    for (int r = 0; r < o.tp; ++r) {
      plans_.push_back(make_shard_plan(config_, o.tp, r));
      backends_.push_back(make_backend(o));
    }
    const bool gpu_sized = o.gpu_memory_fraction > 0;
    if (gpu_sized && backends_[0]->memory().total_bytes == 0)
      throw RunnerError("gpu_memory_fraction needs the cuda backend (backend '" + o.backend + "')");
    CacheOptions cache{o.page_size, gpu_sized ? 0 : o.num_pages, o.kv_cache};
    const int64_t bytes_per_token =
        cache_row_bytes_per_rank(config_, o.tp, o.kv_cache,
                                 int64_t(dtype_size(backends_[0]->cache_dtype())))
            .max_values *
        config_.n_layer;
    if (!gpu_sized && cache.num_pages == 0)
      cache.num_pages = pages_for_budget(o.cache_memory_bytes, bytes_per_token, o.page_size);
    if (!gpu_sized && cache.num_pages <= 0) throw RunnerError("cache memory budget holds no page");
    for (int r = 0; r < o.tp; ++r)
      ranks_.push_back(std::make_unique<Transformer>(config_, plans_[r], *ckpt_, *backends_[r],
                                                     *comms_[r], cache));
    if (gpu_sized) {
      // Every rank gets the page count the tightest GPU can hold (the page tables are shared).
      const int64_t reserve = activation_reserve_bytes(config_, o.cuda_graph_max_batch);
      int64_t pages = std::numeric_limits<int64_t>::max();
      for (int r = 0; r < o.tp; ++r)
        pages = std::min(pages, gpu_cache_pages(backends_[r]->memory(), o.gpu_memory_fraction,
                                                reserve, bytes_per_token, o.page_size));
      if (pages <= 0)
        throw RunnerError("gpu_memory_fraction " + std::to_string(o.gpu_memory_fraction) +
                          " leaves no room for the cache after the weights");
      cache.num_pages = pages;
      for (auto& t : ranks_) t->allocate_cache(pages);
    }
    if (o.cuda_graph_max_batch > 0 && o.tp == 1 && backends_[0]->supports_capture())
      ranks_[0]->enable_decode_graphs(o.cuda_graph_max_batch);
    info_.backend = o.backend;
    info_.tp = o.tp;
    info_.page_size = o.page_size;
    info_.num_pages = cache.num_pages;
    info_.cache_values_per_token_per_layer = widest;
    info_.cache_bytes_per_token = ranks_[0]->cache_bytes_per_token();
    for (const auto& t : ranks_)
      info_.weight_bytes_per_rank = std::max(info_.weight_bytes_per_rank, t->weight_bytes());
    info_.max_context =
        o.max_context ? o.max_context : (config_.block_size ? config_.block_size : 2048);
    spdlog::info(
        "loaded {} ({}) tp={} backend={}: {} pages x {} tokens, cache {} values/token/layer/rank, "
        "weights {:.1f} MB/rank",
        o.model_dir.string(), config_.variant.name(), o.tp, o.backend, cache.num_pages, o.page_size,
        widest, info_.weight_bytes_per_rank / 1e6);
  }

  const ModelConfig& config() const override { return config_; }
  RunnerInfo info() const override { return info_; }

  void execute(const StepBatch& step, const SamplingBatch& sampling, SampledTokens& out) override {
    if (sampling.size() != int64_t(step.logit_rows.size()))
      throw RunnerError("sampling rows (" + std::to_string(sampling.size()) +
                        ") differ from logit rows (" + std::to_string(step.logit_rows.size()) +
                        ")");
    // Rank 0's logits are sampled where they are (host or GPU); only ids come back.
    if (!sampler_) sampler_ = make_token_sampler(*backends_[0], config_.text_vocab_size);
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
    if (ranks_.size() == 1) return rank0(*ranks_[0]);
    std::vector<std::thread> threads;
    std::vector<std::exception_ptr> errors(ranks_.size());
    std::vector<std::vector<float>> unused(ranks_.size());
    for (size_t r = 1; r < ranks_.size(); ++r)
      threads.emplace_back([&, r] {
        try {
          ranks_[r]->forward(step, unused[r]);
        } catch (...) {
          errors[r] = std::current_exception();
        }
      });
    try {
      rank0(*ranks_[0]);
    } catch (...) {
      errors[0] = std::current_exception();
    }
    for (auto& t : threads) t.join();
    for (auto& e : errors)
      if (e) std::rethrow_exception(e);
  }

  static std::unique_ptr<Backend> make_backend(const LocalRunnerOptions& o) {
    if (o.backend == "cpu") return make_cpu_backend();
#ifdef MLRA_HAVE_CUDA
    if (o.backend == "cuda") return make_cuda_backend(o.device);
#endif
    throw RunnerError("backend '" + o.backend + "' is not available in this build");
  }

  ModelConfig config_;
  std::shared_ptr<Checkpoint> ckpt_;
  std::vector<std::unique_ptr<Communicator>> comms_;
  std::vector<ShardPlan> plans_;
  std::vector<std::unique_ptr<Backend>> backends_;
  std::vector<std::unique_ptr<Transformer>> ranks_;
  RunnerInfo info_;
  std::unique_ptr<TokenSampler> sampler_;  // rank 0's backend's sampling op
};

}  // namespace

int64_t activation_reserve_bytes(const ModelConfig& config, int32_t cuda_graph_max_batch) {
  const int64_t graph_logits = int64_t(std::max(cuda_graph_max_batch, 1)) * config.vocab_size * 4;
  const bool expands =
      latent_expansion_supported(config) && config.latent_prefill.mode != LatentPrefill::kAbsorbed;
  return (int64_t(1) << 30) + 3 * graph_logits +
         (expands ? config.latent_prefill.scratch_bytes : 0);
}

ModelConfig load_runner_config(const std::filesystem::path& model_dir,
                               const std::string& variant_name, LatentTpMode mla_tp_mode,
                               const TplaOptions& tpla, int tp,
                               const LatentPrefillOptions& latent_prefill) {
  if (tp < 1) throw RunnerError("tp must be >= 1");
  const auto variant = parse_variant(variant_name);
  if (!variant) throw RunnerError("unknown attention variant '" + variant_name + "'");
  ModelConfig config = load_model_config(model_dir / "config.json", *variant);
  config.mla_tp_mode = mla_tp_mode;
  config.tpla_options = tpla;
  config.latent_prefill = latent_prefill;
  if (mla_tp_mode == LatentTpMode::kTpla && variant->kind != AttentionKind::kMla)
    throw RunnerError("mla_tp_mode tpla applies to MLA checkpoints only, not " + variant->name());
  if (auto why = unsupported_tp_reason(config, tp); !why.empty()) throw RunnerError(why);
  return config;
}

int64_t widest_cache_width(const ModelConfig& config, int tp) {
  int64_t widest = 0;
  for (int r = 0; r < tp; ++r)
    widest = std::max(widest, make_shard_plan(config, tp, r).cache_width);
  return widest;
}

int64_t gpu_cache_pages(const DeviceMemory& m, double fraction, int64_t reserve_bytes,
                        int64_t bytes_per_token, int32_t page_size) {
  const int64_t bytes = gpu_cache_bytes(m, fraction, reserve_bytes);
  return pages_for_budget(std::max<int64_t>(bytes, 0), bytes_per_token, page_size) - 1;
}

int64_t gpu_cache_bytes(const DeviceMemory& m, double fraction, int64_t reserve_bytes) {
  const int64_t used = m.total_bytes - m.free_bytes;  // weights, contexts, other processes
  return int64_t(fraction * double(m.total_bytes)) - used - reserve_bytes;
}

int64_t pages_for_budget(int64_t bytes, int64_t bytes_per_token, int32_t page_size) {
  if (bytes_per_token <= 0 || page_size <= 0) return 0;
  return bytes / (bytes_per_token * page_size);
}

std::unique_ptr<ModelRunner> make_local_runner(const LocalRunnerOptions& options) {
  return std::make_unique<LocalRunner>(options);
}

}  // namespace mlra
