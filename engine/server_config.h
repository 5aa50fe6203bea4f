// Server configuration: one JSON file under configs/ plus command-line overrides ("key=value").
// The file's keys are flat: the server's own below, and the runner's (engine/runner_config.h),
// which fill `runner`. Unknown keys are errors naming the key; a relative model_dir is resolved
// against the folder of the config file, so configs/default.json works from any working directory.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include <nlohmann/json_fwd.hpp>

#include "engine/engine.h"
#include "engine/runner_config.h"
#include "models/model_config.h"

namespace mlra {

struct ServerConfig {
  RunnerConfig runner;         // the model, its backend, TP, devices and cache (its keys)
  std::string dtype = "auto";  // "auto" | "fp32" (cpu) | "bf16" (cuda); see below
  int32_t max_running_seqs = 64;
  int32_t max_step_tokens = 512;
  int32_t max_waiting = 1024;
  bool prefix_cache = true;
  std::string host = "127.0.0.1";  // loopback only; "0.0.0.0" (or an interface) to expose
  int32_t port = 50051;
  int32_t max_rpc_threads = 2048;  // gRPC's thread quota (the callback API needs few)
  int32_t metrics_port = 0;        // 0: no metrics endpoint
  int32_t http_port = 0;           // OpenAI-compatible HTTP API (+ /health, /metrics); 0: off
  std::string chat_template;       // chat template file (server/http/chat_template.h); empty: none
  // Folder of the tokenizer files (models/gpt2_tokenizer.h); empty: the model folder's own when
  // it ships one, else the GPT-2 files installed with the binary (default_tokenizer_dir).
  std::string tokenizer_dir;
  std::string log_level = "info";  // spdlog level name
  bool log_prompts = false;        // request log lines carry the prompt text
  // Authentication (server/auth.h): the key every call must send as "authorization: Bearer
  // <key>" (empty: MLRA_API_KEY from the environment, or none); never logged nor written out.
  std::string api_key;
  std::string tls_cert_file;  // PEM; with tls_key_file: gRPC over TLS
  std::string tls_key_file;
  int64_t grpc_memory_bytes = 256LL << 20;  // gRPC's buffer memory quota (0: gRPC's default)
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

// Engine limits from the config; page_size / num_pages come from the runner, and max_context is
// capped by what it reports.
EngineOptions engine_options(const ServerConfig& config);

}  // namespace mlra
