// Runner config keys: one row per key that both reads (set) and writes (get) its field, so the
// config file, the overrides and the worker wire encoding cannot drift apart (header).
#include "engine/runner_config.h"

#include <functional>
#include <map>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "engine/config_value.h"
#include "engine/kernel_options_json.h"
#include "models/cache_shape.h"
#include "models/variant.h"

namespace mlra {
namespace {

using Json = nlohmann::json;
namespace fs = std::filesystem;

struct Key {
  std::function<void(RunnerConfig&, const std::string& key, const Json&, const fs::path& base)> set;
  std::function<Json(const RunnerConfig&)> get;
};

template <typename T>
Key field(T RunnerConfig::*member) {
  return {[member](RunnerConfig& c, const std::string& key, const Json& v, const fs::path&) {
            c.*member = config_value<T>(key, v);
          },
          [member](const RunnerConfig& c) { return Json(c.*member); }};
}

// A field of a struct member of RunnerConfig (tpla.seed, latent_prefill.scratch_bytes).
template <typename S, typename T>
Key field(S RunnerConfig::*outer, T S::*inner) {
  return {[outer, inner](RunnerConfig& c, const std::string& key, const Json& v, const fs::path&) {
            c.*outer.*inner = config_value<T>(key, v);
          },
          [outer, inner](const RunnerConfig& c) { return Json(c.*outer.*inner); }};
}

// An enum field, written by name; `ref` maps a (const) RunnerConfig to the field.
template <typename Ref, typename E>
Key named(Ref ref, std::optional<E> (*parse)(const std::string&), const char* (*name)(E),
          const char* allowed) {
  return {[=](RunnerConfig& c, const std::string& key, const Json& v, const fs::path&) {
            const std::string s = config_value<std::string>(key, v);
            const std::optional<E> e = parse(s);
            if (!e)
              throw ConfigError(fmt::format("config key '{}': '{}' is not {}", key, s, allowed));
            ref(c) = *e;
          },
          [=](const RunnerConfig& c) { return Json(name(ref(c))); }};
}

bool is_transform_name(const std::string& t) {
  return t == "identity" || t == "hadamard" || t == "random" || t.empty();
}

const std::map<std::string, Key>& keys() {
  static const std::map<std::string, Key> table = {
      {"model_dir",
       {[](RunnerConfig& c, const std::string& key, const Json& v, const fs::path& base) {
          const fs::path p = config_value<std::string>(key, v);
          c.model_dir = (p.is_absolute() ? p : base / p).lexically_normal();
        },
        [](const RunnerConfig& c) { return Json(c.model_dir.string()); }}},
      {"variant", field(&RunnerConfig::variant)},
      {"backend", field(&RunnerConfig::backend)},
      {"tp", field(&RunnerConfig::tp)},
      {"device", field(&RunnerConfig::device)},
      {"tp_devices",
       {[](RunnerConfig& c, const std::string& key, const Json& v, const fs::path&) {
          if (!v.is_array())
            throw ConfigError(fmt::format("config key '{}': wrong type ({})", key, v.dump()));
          c.tp_devices.clear();
          for (const Json& d : v) c.tp_devices.push_back(config_value<int32_t>(key, d));
        },
        [](const RunnerConfig& c) { return Json(c.tp_devices); }}},
      {"mla_tp_mode", named(
                          [](auto& c) -> auto& { return c.mla_tp_mode; }, parse_latent_tp_mode,
                          latent_tp_mode_name, "replicate or tpla")},
      {"tpla_transform",
       // A transform file's relative path resolves like model_dir: against the config's folder
       // (workers run elsewhere); the data-free names stay names.
       {[](RunnerConfig& c, const std::string& key, const Json& v, const fs::path& base) {
          const std::string t = config_value<std::string>(key, v);
          const fs::path p = t;
          c.tpla.transform =
              is_transform_name(t) || p.is_absolute() ? t : (base / p).lexically_normal().string();
        },
        [](const RunnerConfig& c) { return Json(c.tpla.transform); }}},
      {"tpla_pd_separation", field(&RunnerConfig::tpla, &TplaOptions::pd_separation)},
      {"tpla_seed", field(&RunnerConfig::tpla, &TplaOptions::seed)},
      {"tpla_slices", field(&RunnerConfig::tpla, &TplaOptions::slices)},
      {"latent_prefill",
       named(
           [](auto& c) -> auto& { return c.latent_prefill.mode; }, parse_latent_prefill,
           latent_prefill_name, "auto, absorbed or expanded")},
      {"latent_prefill_scratch_bytes",
       field(&RunnerConfig::latent_prefill, &LatentPrefillOptions::scratch_bytes)},
      {"page_size", field(&RunnerConfig::page_size)},
      {"cache_memory_bytes", field(&RunnerConfig::cache_memory_bytes)},
      {"num_pages", field(&RunnerConfig::num_pages)},
      {"kv_cache_dtype", named(
                             [](auto& c) -> auto& { return c.kv_cache; }, parse_kv_cache_dtype,
                             kv_cache_dtype_name, "auto or fp8_e4m3")},
      {"gpu_memory_fraction", field(&RunnerConfig::gpu_memory_fraction)},
      {"cuda_graph_max_batch", field(&RunnerConfig::cuda_graph_max_batch)},
      {"max_context", field(&RunnerConfig::max_context)},
      {"kernels",
       {[](RunnerConfig& c, const std::string&, const Json& v, const fs::path&) {
          c.kernels = parse_kernel_options(v);
        },
        [](const RunnerConfig& c) { return to_json(c.kernels); }}},
  };
  return table;
}

void require(bool ok, const std::string& key, const std::string& why) {
  if (!ok) throw ConfigError(fmt::format("config key '{}': {}", key, why));
}

}  // namespace

int32_t rank_device(const RunnerConfig& config, int rank) {
  return rank_devices(config).at(size_t(rank));
}

std::vector<int32_t> rank_devices(const RunnerConfig& config) {
  try {
    return tp_device_list(config.tp_devices, config.device, config.tp);
  } catch (const std::invalid_argument& e) {
    throw ConfigError(fmt::format("config key 'tp_devices': {}", e.what()));
  }
}

CommunicatorKind rank_communicator(const RunnerConfig& config) {
  return communicator_kind(config.backend == "cuda" ? DeviceKind::kCuda : DeviceKind::kCpu,
                           rank_devices(config));
}

bool set_runner_key(RunnerConfig& config, const std::string& key, const Json& value,
                    const fs::path& base_dir) {
  const auto it = keys().find(key);
  if (it == keys().end()) return false;
  it->second.set(config, key, value, base_dir);
  return true;
}

void validate_runner_config(const RunnerConfig& c) {
  require(!c.model_dir.empty(), "model_dir", "must be set");
  require(parse_variant(c.variant).has_value(), "variant",
          fmt::format("unknown variant '{}'", c.variant));
  require(c.backend == "cpu" || c.backend == "cuda", "backend",
          fmt::format("'{}' is not cpu or cuda", c.backend));
  require(c.tp >= 1 && c.tp <= 64, "tp", "must be in [1, 64]");
  require(c.device >= 0, "device", "must be >= 0");
  // One entry per rank is checked where the runner starts (rank_devices): tp and tp_devices
  // may arrive as two overrides, in either order.
  for (int32_t d : c.tp_devices) require(d >= 0, "tp_devices", "devices must be >= 0");
  require(!c.tpla.transform.empty(), "tpla_transform", "must not be empty");
  require(c.tpla.slices >= 0, "tpla_slices", "must be >= 0");
  require(c.latent_prefill.scratch_bytes >= 0, "latent_prefill_scratch_bytes", "must be >= 0");
  require(c.page_size >= 1 && c.page_size <= 4096, "page_size", "must be in [1, 4096]");
  require(c.cache_memory_bytes > 0, "cache_memory_bytes", "must be > 0");
  require(c.num_pages >= 0, "num_pages", "must be >= 0 (0: from cache_memory_bytes)");
  require(c.gpu_memory_fraction >= 0 && c.gpu_memory_fraction < 1, "gpu_memory_fraction",
          "must be in [0, 1) (0: size the cache by cache_memory_bytes)");
  require(c.cuda_graph_max_batch >= 0 && c.cuda_graph_max_batch <= 512, "cuda_graph_max_batch",
          "must be in [0, 512] (0: no CUDA graphs)");
  require(c.max_context >= 0, "max_context", "must be >= 0 (0: the model's block_size)");
}

Json to_json(const RunnerConfig& config) {
  Json j = Json::object();
  for (const auto& [key, k] : keys()) j[key] = k.get(config);
  return j;
}

RunnerConfig runner_config_from_json(const Json& j, const fs::path& base_dir) {
  if (!j.is_object()) throw ConfigError("runner config must be a JSON object");
  RunnerConfig c;
  for (const auto& [key, value] : j.items())
    if (!set_runner_key(c, key, value, base_dir))
      throw ConfigError(fmt::format("unknown config key '{}'", key));
  validate_runner_config(c);
  return c;
}

}  // namespace mlra
