// An in-process ModelRunner: TP ranks as threads of this process (CPU backend, or one CUDA
// device at TP=1). The multi-process runner (one worker per GPU) lives in engine/ and reuses
// Transformer the same way.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "engine/model_runner.h"
#include "kernels/backend.h"
#include "models/model_config.h"

namespace mlra {

struct LocalRunnerOptions {
  std::filesystem::path model_dir;
  std::string variant;  // "mlra4", "mla_gated", ...
  std::string backend = "cpu";
  int tp = 1;
  int device = 0;
  int32_t page_size = 64;
  int64_t num_pages = 0;                     // if 0: from cache_memory_bytes
  int64_t cache_memory_bytes = 256LL << 20;  // per rank
  CacheEncoding kv_cache = CacheEncoding::kPlain;  // kv_cache_dtype: plain or FP8
  int64_t max_context = 0;                   // 0: config block_size (or 2048 if absent)
  double gpu_memory_fraction = 0;            // cuda, > 0: cache sized by gpu_cache_bytes() instead
  int32_t cuda_graph_max_batch = 0;  // cuda at TP=1: pure decode steps up to this batch use graphs
  LatentTpMode mla_tp_mode = LatentTpMode::kReplicate;  // MLA checkpoints: replicate or TPLA
  TplaOptions tpla;
  LatentPrefillOptions latent_prefill;  // MLA / GLA prefill chunks: absorbed or expanded form
};

std::unique_ptr<ModelRunner> make_local_runner(const LocalRunnerOptions& options);

// The model config a runner serves: config.json read as `variant`, the MLA TP mode applied, and
// the combination checked (TPLA only for MLA; a TP degree the variant can take). Throws
// RunnerError with a message a user can act on. Shared by the in-process and worker runners.
ModelConfig load_runner_config(const std::filesystem::path& model_dir, const std::string& variant,
                               LatentTpMode mla_tp_mode, const TplaOptions& tpla, int tp,
                               const LatentPrefillOptions& latent_prefill = {});
// Values per token per layer of the widest rank: page ids are shared, so every rank's cache is
// sized for this width.
int64_t widest_cache_width(const ModelConfig& config, int tp);

// Pages that fit in `bytes` for a rank caching `bytes_per_token` bytes per token.
int64_t pages_for_budget(int64_t bytes, int64_t bytes_per_token, int32_t page_size);

// Cache bytes a GPU can give when the server may use `fraction` of its memory in all: what is
// still free under that cap (weights are already resident) minus a reserve for activations,
// workspaces and recorded graphs. Negative when nothing is left.
int64_t gpu_cache_bytes(const DeviceMemory& after_weights, double fraction, int64_t reserve_bytes);
// The reserve: 1 GiB for a step's activations and the attention workspace, room for decode
// graphs' logits buffers, and the expanded latent prefill's scratch (MLA / GLA).
int64_t activation_reserve_bytes(const ModelConfig& config, int32_t cuda_graph_max_batch);
// Pages one GPU can hold under that cap (one fewer than fit: the cache keeps a scratch page past
// the shared ones); <= 0 when none.
int64_t gpu_cache_pages(const DeviceMemory& after_weights, double fraction, int64_t reserve_bytes,
                        int64_t bytes_per_token, int32_t page_size);

}  // namespace mlra
