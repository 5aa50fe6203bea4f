// Rank setup and the runner-side page and info arithmetic (header).
#include "engine/rank.h"

#include <unistd.h>

#include <algorithm>
#include <limits>
#include <string>

#include "engine/cache_budget.h"
#include "models/cache_shape.h"
#include "models/shard_plan.h"
#include "models/variant.h"

namespace mlra {
namespace {

std::unique_ptr<Backend> make_rank_backend(const RunnerConfig& config, int device) {
  if (config.backend == "cpu") return make_cpu_backend();
#ifdef MLRA_HAVE_CUDA
  if (config.backend == "cuda") return make_cuda_backend(device, config.kernels);
#endif
  (void)device;
  throw RunnerError("backend '" + config.backend + "' is not available in this build");
}

// Ranks sharing a device measure its free memory only once every one of them holds its weights:
// an all-reduce of one value is the barrier.
void wait_for_peers(Communicator& comm, Backend& backend) {
  Tensor one = backend.alloc({1}, DType::kF32);
  const float zero = 0.0f;
  backend.upload_f32(one, &zero);
  comm.all_reduce_sum(one.data, 1, DType::kF32);
  backend.synchronize();
}

}  // namespace

ModelConfig runner_model_config(const RunnerConfig& config) {
  validate_runner_config(config);
  const Variant variant = *parse_variant(config.variant);  // validated above
  ModelConfig model = load_model_config(config.model_dir / "config.json", variant);
  model.mla_tp_mode = config.mla_tp_mode;
  model.tpla_options = config.tpla;
  model.latent_prefill = config.latent_prefill;
  if (config.mla_tp_mode == LatentTpMode::kTpla && variant.kind != AttentionKind::kMla)
    throw RunnerError("mla_tp_mode tpla applies to MLA checkpoints only, not " + variant.name());
  if (auto why = unsupported_tp_reason(model, config.tp); !why.empty()) throw RunnerError(why);
  rank_devices(config);  // one device per rank, or a ConfigError naming tp_devices
  return model;
}

int64_t shared_page_count(const RunnerConfig& config, const ModelConfig& model) {
  if (config.gpu_memory_fraction > 0) {
    if (config.backend != "cuda")
      throw RunnerError("gpu_memory_fraction needs the cuda backend (backend '" + config.backend +
                        "')");
    return 0;
  }
  if (config.num_pages > 0) return config.num_pages;
  const int64_t bytes_per_token =
      cache_row_bytes_per_rank(model, config.tp, config.kv_cache, cache_value_bytes(config.backend))
          .max_values *
      model.n_layer;
  const int64_t pages =
      pages_for_budget(config.cache_memory_bytes, bytes_per_token, config.page_size);
  if (pages <= 0) throw RunnerError("cache memory budget holds no page");
  return pages;
}

int64_t settle_gpu_pages(const RunnerConfig& config, const std::vector<RankInfo>& ranks) {
  int64_t pages = std::numeric_limits<int64_t>::max();
  for (const RankInfo& r : ranks) pages = std::min(pages, r.num_pages);
  if (ranks.empty() || pages <= 0)
    throw RunnerError("gpu_memory_fraction " + std::to_string(config.gpu_memory_fraction) +
                      " leaves no room for the cache after the weights");
  return pages;
}

RunnerInfo runner_info(const RunnerConfig& config, const ModelConfig& model,
                       std::vector<RankInfo> ranks, int64_t num_pages) {
  RunnerInfo info;
  info.backend = config.backend;
  info.tp = config.tp;
  info.page_size = config.page_size;
  info.num_pages = num_pages;
  for (RankInfo& r : ranks) {
    r.num_pages = num_pages;
    info.cache_values_per_token_per_layer =
        std::max(info.cache_values_per_token_per_layer, r.cache_values_per_token_per_layer);
    info.cache_bytes_per_token = std::max(info.cache_bytes_per_token, r.cache_bytes_per_token);
    info.weight_bytes_per_rank = std::max(info.weight_bytes_per_rank, r.weight_bytes);
  }
  info.max_context =
      config.max_context ? config.max_context : (model.block_size ? model.block_size : 2048);
  info.ranks = std::move(ranks);
  return info;
}

Rank::Rank(const RunnerConfig& config, const ModelConfig& model, const Checkpoint& checkpoint,
           int rank, const CommFactory& make_comm) {
  if (rank < 0 || rank >= config.tp)
    throw RunnerError("rank " + std::to_string(rank) + " of tp " + std::to_string(config.tp));
  const int32_t device = rank_device(config, rank);
  backend_ = make_rank_backend(config, device);
  // The shared page count assumed this value size; a backend caching another would overrun it.
  if (int64_t(dtype_size(backend_->cache_dtype())) != cache_value_bytes(config.backend))
    throw RunnerError("backend " + backend_->name() + " caches " +
                      std::to_string(dtype_size(backend_->cache_dtype())) +
                      "-byte values, not the assumed " +
                      std::to_string(cache_value_bytes(config.backend)));
  comm_ = make_comm(*backend_);
  const ShardPlan plan = make_shard_plan(model, config.tp, rank);
  const bool gpu_sized = config.gpu_memory_fraction > 0;
  const int64_t shared = shared_page_count(config, model);
  model_ = std::make_unique<Transformer>(model, plan, checkpoint, *backend_, *comm_,
                                         CacheOptions{config.page_size, shared, config.kv_cache});
  info_.rank = rank;
  info_.device = device;
  info_.pid = ::getpid();
  info_.backend = backend_->name();
  info_.weight_bytes = model_->weight_bytes();
  info_.cache_bytes_per_token = model_->cache_bytes_per_token();
  info_.cache_values_per_token_per_layer = plan.cache_width;
  info_.num_pages = shared;
  if (gpu_sized) {
    // A collective: every rank joins, also one alone on its device.
    if (rank_communicator(config) == CommunicatorKind::kHostStaged)
      wait_for_peers(*comm_, *backend_);
    info_.num_pages = gpu_cache_pages(backend_->memory(), config.gpu_memory_fraction,
                                      activation_reserve_bytes(model, config.cuda_graph_max_batch),
                                      info_.cache_bytes_per_token, config.page_size,
                                      ranks_sharing_device(rank_devices(config), rank));
  }
  if (config.cuda_graph_max_batch > 0 && backend_->supports_capture())
    model_->enable_decode_graphs(config.cuda_graph_max_batch);
}

void Rank::allocate_cache(int64_t num_pages) {
  if (num_pages <= 0 || num_pages > info_.num_pages)
    throw RunnerError("rank " + std::to_string(info_.rank) + ": allocating " +
                      std::to_string(num_pages) + " pages (" + std::to_string(info_.num_pages) +
                      " fit)");
  model_->allocate_cache(num_pages);
  info_.num_pages = num_pages;
}

}  // namespace mlra
