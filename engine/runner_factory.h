// Chooses the ModelRunner for a configuration: the in-process LocalRunner for TP=1 (or when asked
// for in-process TP, threads as ranks), and the multi-process ProcessRunner (one worker process
// per device) for TP > 1. The engine only ever sees ModelRunner.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "engine/model_runner.h"
#include "kernels/paged_attention.h"

namespace mlra {

struct ServerConfig;

struct RunnerOptions {
  std::filesystem::path model_dir;
  std::string variant = "mlra4";
  std::string backend = "cpu";  // "cpu" | "cuda": worker r uses GPU first_device + r
  int32_t tp = 1;
  int32_t first_device = 0;
  int32_t page_size = 64;
  int64_t num_pages = 0;                     // 0: from cache_memory_bytes (same on every rank)
  int64_t cache_memory_bytes = 256LL << 20;  // per rank
  CacheEncoding kv_cache = CacheEncoding::kPlain;  // kv_cache_dtype
  int64_t max_context = 0;                   // 0: the model's block_size (2048 if absent)
  double gpu_memory_fraction = 0;            // cuda, > 0: cache = this share of each GPU's memory
                                             // minus weights and a workspace reserve
  int32_t cuda_graph_max_batch = 0;          // cuda: decode batches up to this replay CUDA graphs
  bool in_process = false;                   // TP ranks as threads of this process (LocalRunner)
  LatentTpMode mla_tp_mode = LatentTpMode::kReplicate;  // MLA checkpoints: replicate or TPLA
  TplaOptions tpla;
  LatentPrefillOptions latent_prefill;
  // Multi-process only.
  std::filesystem::path worker_binary;  // empty: /proc/self/exe (mlra-serve with `worker`)
  double load_timeout_s = 600;          // Init -> Ready per worker
  double step_timeout_s = 60;           // Step -> Logits/Ack
  double shutdown_timeout_s = 5;        // Shutdown -> exit before SIGKILL
};

RunnerOptions runner_options(const ServerConfig& config);
std::unique_ptr<ModelRunner> make_runner(const RunnerOptions& options);

}  // namespace mlra
