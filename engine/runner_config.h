// The run configuration of a model runner: everything a TP rank needs to build its shard of the
// model, its backend and its cache. One value, part of the server config (its keys are config
// file keys of the same names), handed whole to the in-process runner and, as JSON through the
// control channel, to every worker process. Invariant: runner_config_from_json(to_json(c)) == c
// (tests/test_server_config.cpp).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "kernels/communicator.h"
#include "kernels/kernel_options.h"
#include "kernels/paged_attention.h"
#include "models/model_config.h"

namespace mlra {

struct RunnerConfig {
  std::filesystem::path model_dir;  // folder with config.json + weights
  std::string variant = "mlra4";    // attention variant name (models/variant.h)
  std::string backend = "cpu";      // "cpu" | "cuda"
  int32_t tp = 1;                   // tensor-parallel degree
  // Device placement: rank_device() alone maps a rank to its device ordinal (tp_devices[rank]
  // when listed, else device + rank).
  int32_t device = 0;               // backend cuda: the first device
  std::vector<int32_t> tp_devices;  // or each rank's device, one entry per rank (may repeat)
  LatentTpMode mla_tp_mode = LatentTpMode::kReplicate;  // MLA checkpoints: replicate or TPLA
  TplaOptions tpla;  // keys tpla_transform, tpla_pd_separation, tpla_seed, tpla_slices
  // MLA / GLA prefill chunks, absorbed or expanded: keys latent_prefill (the mode) and
  // latent_prefill_scratch_bytes.
  LatentPrefillOptions latent_prefill;
  int32_t page_size = 64;                    // tokens per cache page
  int64_t cache_memory_bytes = 256LL << 20;  // cache budget per rank
  int64_t num_pages = 0;                     // 0: from cache_memory_bytes (same on every rank)
  // kv_cache_dtype: "auto" (kPlain, the backend's cache dtype) or "fp8_e4m3" (models/cache_shape.h)
  CacheEncoding kv_cache = CacheEncoding::kPlain;
  double gpu_memory_fraction = 0;      // cuda, > 0: the cache takes what this share of each GPU
                                       // leaves after the weights and an activation reserve
  int32_t cuda_graph_max_batch = 256;  // cuda: pure decode steps up to this batch replay graphs
  int64_t max_context = 0;             // 0: the model's block_size (2048 if absent)
  KernelOptions kernels;               // kernel choices of the CUDA backend

  bool operator==(const RunnerConfig&) const = default;
};

// The device ordinal TP rank `rank` runs on: tp_devices[rank] when listed, else device + rank.
int32_t rank_device(const RunnerConfig& config, int rank);
// Every rank's device (ConfigError unless tp_devices is empty or lists one per rank), and the
// communicator the ranks use with it: ranks that share a device (NCCL refuses two on one) sum
// host-staged, kernels/host_staged_communicator.h.
std::vector<int32_t> rank_devices(const RunnerConfig& config);
CommunicatorKind rank_communicator(const RunnerConfig& config);

// Sets the field of config key `key` (ConfigError naming the key on a wrong type or value).
// Returns false when `key` is not a runner key. Relative model_dir and tpla_transform paths
// resolve against `base_dir`; the transform names identity, hadamard and random stay names.
bool set_runner_key(RunnerConfig& config, const std::string& key, const nlohmann::json& value,
                    const std::filesystem::path& base_dir);
// Range checks of every field; throws ConfigError naming the key.
void validate_runner_config(const RunnerConfig& config);

// Every runner key with its value: the wire encoding sent to workers, and the runner part of
// the server config's JSON.
nlohmann::json to_json(const RunnerConfig& config);
// Reads an object of runner keys (unknown keys are errors) and validates the result.
RunnerConfig runner_config_from_json(const nlohmann::json& j,
                                     const std::filesystem::path& base_dir);

}  // namespace mlra
