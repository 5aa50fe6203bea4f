// An in-process ModelRunner: TP ranks as threads of this process (CPU backend, or one CUDA
// device at TP=1). The multi-process runner (one worker per GPU) lives in engine/ and reuses
// Transformer the same way.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "engine/model_runner.h"
#include "models/model_config.h"

namespace mlra {

struct LocalRunnerOptions {
  std::filesystem::path model_dir;
  std::string variant;        // "mlra4", "mla_gated", ...
  std::string backend = "cpu";
  int tp = 1;
  int device = 0;
  int32_t page_size = 64;
  int64_t num_pages = 0;             // if 0: from cache_memory_bytes
  int64_t cache_memory_bytes = 256LL << 20;  // per rank
  int64_t max_context = 0;           // 0: config block_size (or 2048 if absent)
  LatentTpMode mla_tp_mode = LatentTpMode::kReplicate;  // MLA checkpoints: replicate or TPLA
  TplaOptions tpla;
};

std::unique_ptr<ModelRunner> make_local_runner(const LocalRunnerOptions& options);

// Pages that fit in `bytes` for a rank caching `bytes_per_token` bytes per token.
int64_t pages_for_budget(int64_t bytes, int64_t bytes_per_token, int32_t page_size);

}  // namespace mlra
