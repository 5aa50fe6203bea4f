// Rank setup, one path for both runners: the in-process runner builds a Rank per thread, a worker
// process builds its own. A Rank is one TP rank's backend on its device, its communicator and its
// Transformer shard (weights and its slice of every cache page). The free functions are the
// runner's side: the model config every rank serves, the page count all ranks share, and the
// RunnerInfo their reports add up to.
// Invariant: every rank of a runner holds the same number of pages (page ids are shared).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "engine/model_runner.h"
#include "engine/runner_config.h"
#include "kernels/backend.h"
#include "kernels/communicator.h"
#include "models/checkpoint.h"
#include "models/model_config.h"
#include "models/transformer.h"

namespace mlra {

// The model config a runner serves: config.json read as config.variant, the MLA TP mode, TPLA
// and latent prefill options applied, and the combination checked (TPLA only for MLA; a TP
// degree the variant can take). Throws ConfigError for an invalid config, RunnerError for a
// model it cannot serve, with a message a user can act on.
ModelConfig runner_model_config(const RunnerConfig& config);

// Pages every rank allocates when the cache is sized by bytes: num_pages, or what
// cache_memory_bytes holds for the widest rank. 0 for a GPU-sized cache (gpu_memory_fraction >
// 0), whose count is settled after loading (settle_gpu_pages). Throws RunnerError when the budget
// holds no page or a GPU-sized cache is asked of the CPU backend.
int64_t shared_page_count(const RunnerConfig& config, const ModelConfig& model);

// A GPU-sized cache's page count: the smallest any rank reported fits. Throws RunnerError when
// that is none.
int64_t settle_gpu_pages(const RunnerConfig& config, const std::vector<RankInfo>& ranks);

// The runner's report from its ranks' (each now holding `num_pages` pages).
RunnerInfo runner_info(const RunnerConfig& config, const ModelConfig& model,
                       std::vector<RankInfo> ranks, int64_t num_pages);

class Rank {
 public:
  // Makes the rank's communicator once its backend exists (NCCL binds to the backend's stream).
  using CommFactory = std::function<std::unique_ptr<Communicator>(Backend&)>;

  // Loads rank `rank` of config.tp on device rank_device(config, rank). The cache is allocated
  // with shared_page_count() pages, or, when GPU-sized, info().num_pages says how many fit and
  // allocate_cache() must follow with the settled count. Decode graphs are enabled when the
  // backend can record them and cuda_graph_max_batch > 0.
  Rank(const RunnerConfig& config, const ModelConfig& model, const Checkpoint& checkpoint, int rank,
       const CommFactory& make_comm);

  void allocate_cache(int64_t num_pages);

  Transformer& model() { return *model_; }
  Backend& backend() { return *backend_; }
  const RankInfo& info() const { return info_; }

 private:
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<Communicator> comm_;
  std::unique_ptr<Transformer> model_;
  RankInfo info_;
};

}  // namespace mlra
