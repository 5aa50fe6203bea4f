// Server configuration: one JSON file under configs/ plus command-line overrides ("key=value").
// Unknown keys are errors naming the key; a relative model_dir is resolved against the folder
// of the config file, so configs/default.json works from any working directory.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include <nlohmann/json_fwd.hpp>

#include "engine/engine.h"
#include "models/model_config.h"

namespace mlra {

struct ServerConfig {
  std::filesystem::path model_dir;          // folder with config.json + weights
  std::string variant = "mlra4";            // attention variant name (models/variant.h)
  std::string backend = "cpu";              // "cpu" | "cuda"
  std::string dtype = "auto";               // "auto" | "fp32" (cpu) | "bf16" (cuda); see below
  int32_t tp = 1;                           // tensor-parallel degree
  int32_t device = 0;                       // first CUDA device (backend "cuda")
  std::string mla_tp_mode = "replicate";    // MLA checkpoints: "replicate" | "tpla"
  std::string tpla_transform = "hadamard";  // "identity" | "hadamard" | path of a PCA transform
  bool tpla_pd_separation = true;           // prefill exact MLA, decode TPLA
  int32_t tpla_slices = 0;                  // 0: the TP degree
  // MLA / GLA prefill chunks: "auto" (expanded where it saves FLOPs) | "absorbed" | "expanded"
  // (models/model_config.h LatentPrefill); scratch bytes per rank and step for the expanded form.
  std::string latent_prefill = "auto";
  int64_t latent_prefill_scratch_bytes = int64_t(512) << 20;
  int32_t page_size = 64;
  int64_t cache_memory_bytes = 256LL << 20;  // latent/KV cache budget per rank
  int64_t num_pages = 0;                     // 0: derived from cache_memory_bytes
  std::string kv_cache_dtype = "auto";       // "auto" | "fp8_e4m3" (models/cache_shape.h)
  double gpu_memory_fraction = 0;            // cuda: > 0 sizes the cache to this share of each GPU
  int32_t cuda_graph_max_batch = 256;        // cuda: decode steps up to this batch replay graphs
  int32_t max_running_seqs = 64;
  int32_t max_step_tokens = 512;
  int64_t max_context = 0;  // 0: the model's block_size
  int32_t max_waiting = 1024;
  bool prefix_cache = true;
  std::string host = "0.0.0.0";
  int32_t port = 50051;
  int32_t max_rpc_threads = 2048;  // gRPC threads: one per in-flight Generate/Complete
  int32_t metrics_port = 0;        // 0: no metrics endpoint
  std::string log_level = "info";  // spdlog level name
  bool log_prompts = false;        // request log lines carry the prompt text
};

// Throws ConfigError naming the offending key (unknown key, wrong type, out of range).
ServerConfig parse_server_config(const nlohmann::json& j, const std::filesystem::path& base_dir);
ServerConfig load_server_config(const std::filesystem::path& file);
// Applies one "key=value" override (same keys as the file; value parsed as JSON when it is
// valid JSON, else taken as a string). Relative model_dir resolves against the working dir.
void apply_config_override(ServerConfig& config, std::string_view key_equals_value);
void validate_server_config(const ServerConfig& config);  // throws ConfigError
// The dtype the backend computes in: fp32 on the CPU backend, bf16 weights/activations/cache on
// CUDA (fp32 residual and norm math on both). "auto" resolves to it; an explicit dtype must match.
std::string effective_dtype(const ServerConfig& config);
nlohmann::json to_json(const ServerConfig& config);

// Engine limits from the config; page_size / num_pages / max_context come from the runner.
EngineOptions engine_options(const ServerConfig& config);

}  // namespace mlra
