// Server config parsing: one setter per key (so unknown keys and type errors name the key),
// range validation, overrides and JSON output (header).
#include "engine/server_config.h"

#include <fstream>
#include <functional>
#include <map>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "models/cache_shape.h"
#include "models/variant.h"

namespace mlra {

namespace {

using Json = nlohmann::json;
using Setter = std::function<void(ServerConfig&, const std::string& key, const Json&,
                                  const std::filesystem::path&)>;

template <typename T>
T value_of(const std::string& key, const Json& v) {
  const bool ok = [&] {
    if constexpr (std::is_same_v<T, bool>)
      return v.is_boolean();
    else if constexpr (std::is_integral_v<T>)
      return v.is_number_integer();
    else if constexpr (std::is_floating_point_v<T>)
      return v.is_number();
    else
      return v.is_string();
  }();
  if (!ok) throw ConfigError(fmt::format("config key '{}': wrong type ({})", key, v.dump()));
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
    const auto x = v.get<int64_t>();
    if (x < std::numeric_limits<T>::min() || x > std::numeric_limits<T>::max()) {
      throw ConfigError(fmt::format("config key '{}': {} out of range", key, x));
    }
    return static_cast<T>(x);
  } else {
    return v.get<T>();
  }
}

template <typename T>
Setter field(T ServerConfig::*member) {
  return [member](ServerConfig& c, const std::string& key, const Json& v,
                  const std::filesystem::path&) { c.*member = value_of<T>(key, v); };
}

const std::map<std::string, Setter>& setters() {
  static const std::map<std::string, Setter> table = {
      {"model_dir",
       [](ServerConfig& c, const std::string& key, const Json& v,
          const std::filesystem::path& base) {
         std::filesystem::path p = value_of<std::string>(key, v);
         c.model_dir = (p.is_absolute() ? p : base / p).lexically_normal();
       }},
      {"variant", field(&ServerConfig::variant)},
      {"backend", field(&ServerConfig::backend)},
      {"dtype", field(&ServerConfig::dtype)},
      {"tp", field(&ServerConfig::tp)},
      {"device", field(&ServerConfig::device)},
      {"mla_tp_mode", field(&ServerConfig::mla_tp_mode)},
      {"tpla_transform",
       // A transform file's relative path resolves like model_dir: against the config's folder
       // (workers run elsewhere); the data-free names stay names.
       [](ServerConfig& c, const std::string& key, const Json& v,
          const std::filesystem::path& base) {
         const std::string t = value_of<std::string>(key, v);
         const bool named = t == "identity" || t == "hadamard" || t == "random" || t.empty();
         const std::filesystem::path p = t;
         c.tpla_transform = named || p.is_absolute() ? t : (base / p).lexically_normal().string();
       }},
      {"tpla_pd_separation", field(&ServerConfig::tpla_pd_separation)},
      {"tpla_slices", field(&ServerConfig::tpla_slices)},
      {"latent_prefill", field(&ServerConfig::latent_prefill)},
      {"latent_prefill_scratch_bytes", field(&ServerConfig::latent_prefill_scratch_bytes)},
      {"page_size", field(&ServerConfig::page_size)},
      {"cache_memory_bytes", field(&ServerConfig::cache_memory_bytes)},
      {"num_pages", field(&ServerConfig::num_pages)},
      {"kv_cache_dtype", field(&ServerConfig::kv_cache_dtype)},
      {"gpu_memory_fraction", field(&ServerConfig::gpu_memory_fraction)},
      {"cuda_graph_max_batch", field(&ServerConfig::cuda_graph_max_batch)},
      {"max_running_seqs", field(&ServerConfig::max_running_seqs)},
      {"max_step_tokens", field(&ServerConfig::max_step_tokens)},
      {"max_context", field(&ServerConfig::max_context)},
      {"max_waiting", field(&ServerConfig::max_waiting)},
      {"prefix_cache", field(&ServerConfig::prefix_cache)},
      {"host", field(&ServerConfig::host)},
      {"port", field(&ServerConfig::port)},
      {"max_rpc_threads", field(&ServerConfig::max_rpc_threads)},
      {"metrics_port", field(&ServerConfig::metrics_port)},
      {"log_level", field(&ServerConfig::log_level)},
      {"log_prompts", field(&ServerConfig::log_prompts)},
  };
  return table;
}

void set_key(ServerConfig& c, const std::string& key, const Json& value,
             const std::filesystem::path& base) {
  auto it = setters().find(key);
  if (it == setters().end()) throw ConfigError(fmt::format("unknown config key '{}'", key));
  it->second(c, key, value, base);
}

void require(bool ok, const std::string& key, const std::string& why) {
  if (!ok) throw ConfigError(fmt::format("config key '{}': {}", key, why));
}

bool one_of(const std::string& v, std::initializer_list<const char*> allowed) {
  for (const char* a : allowed) {
    if (v == a) return true;
  }
  return false;
}

}  // namespace

ServerConfig parse_server_config(const Json& j, const std::filesystem::path& base_dir) {
  if (!j.is_object()) throw ConfigError("server config must be a JSON object");
  ServerConfig c;
  for (const auto& [key, value] : j.items()) set_key(c, key, value, base_dir);
  validate_server_config(c);
  return c;
}

ServerConfig load_server_config(const std::filesystem::path& file) {
  std::ifstream in(file);
  if (!in) throw ConfigError(fmt::format("cannot open config file {}", file.string()));
  Json j;
  try {
    j = Json::parse(in);
  } catch (const Json::parse_error& e) {
    throw ConfigError(fmt::format("config file {}: {}", file.string(), e.what()));
  }
  return parse_server_config(j, std::filesystem::absolute(file).parent_path());
}

void apply_config_override(ServerConfig& config, std::string_view key_equals_value) {
  const size_t eq = key_equals_value.find('=');
  if (eq == std::string_view::npos || eq == 0) {
    throw ConfigError(fmt::format("override '{}' is not key=value", key_equals_value));
  }
  const std::string key(key_equals_value.substr(0, eq));
  const std::string text(key_equals_value.substr(eq + 1));
  Json value = Json::parse(text, nullptr, false);
  if (value.is_discarded()) value = text;
  set_key(config, key, value, std::filesystem::current_path());
  validate_server_config(config);
}

void validate_server_config(const ServerConfig& c) {
  require(!c.model_dir.empty(), "model_dir", "must be set");
  require(parse_variant(c.variant).has_value(), "variant",
          fmt::format("unknown variant '{}'", c.variant));
  require(one_of(c.backend, {"cpu", "cuda"}), "backend",
          fmt::format("'{}' is not cpu or cuda", c.backend));
  require(one_of(c.dtype, {"auto", "fp32", "bf16"}), "dtype",
          fmt::format("'{}' is not auto, fp32 or bf16", c.dtype));
  require(
      c.dtype == "auto" || c.backend != "cpu" || c.dtype == "fp32", "dtype",
      fmt::format("'{}' needs backend cuda: the CPU backend computes in fp32 (use auto)", c.dtype));
  require(c.dtype == "auto" || c.backend != "cuda" || c.dtype == "bf16", "dtype",
          fmt::format("'{}' is not what the CUDA backend runs: bf16 weights, activations and cache "
                      "(use auto)",
                      c.dtype));
  require(c.tp >= 1 && c.tp <= 64, "tp", "must be in [1, 64]");
  require(c.device >= 0, "device", "must be >= 0");
  require(one_of(c.mla_tp_mode, {"replicate", "tpla"}), "mla_tp_mode", "must be replicate or tpla");
  require(!c.tpla_transform.empty(), "tpla_transform", "must not be empty");
  require(c.tpla_slices >= 0, "tpla_slices", "must be >= 0");
  require(one_of(c.latent_prefill, {"auto", "absorbed", "expanded"}), "latent_prefill",
          "must be auto, absorbed or expanded");
  require(c.latent_prefill_scratch_bytes >= 0, "latent_prefill_scratch_bytes", "must be >= 0");
  require(c.page_size >= 1 && c.page_size <= 4096, "page_size", "must be in [1, 4096]");
  require(c.cache_memory_bytes > 0, "cache_memory_bytes", "must be > 0");
  require(c.num_pages >= 0, "num_pages", "must be >= 0 (0: from cache_memory_bytes)");
  require(parse_kv_cache_dtype(c.kv_cache_dtype).has_value(), "kv_cache_dtype",
          fmt::format("'{}' is not auto or fp8_e4m3", c.kv_cache_dtype));
  require(c.gpu_memory_fraction >= 0 && c.gpu_memory_fraction < 1, "gpu_memory_fraction",
          "must be in [0, 1) (0: size the cache by cache_memory_bytes)");
  require(c.cuda_graph_max_batch >= 0 && c.cuda_graph_max_batch <= 512, "cuda_graph_max_batch",
          "must be in [0, 512] (0: no CUDA graphs)");
  require(c.max_running_seqs >= 1, "max_running_seqs", "must be >= 1");
  require(c.max_step_tokens >= 1, "max_step_tokens", "must be >= 1");
  require(c.max_context >= 0, "max_context", "must be >= 0 (0: the model's block_size)");
  require(c.max_waiting >= 1, "max_waiting", "must be >= 1");
  require(!c.host.empty(), "host", "must not be empty");
  require(c.port >= 0 && c.port <= 65535, "port", "must be in [0, 65535]");
  require(c.max_rpc_threads >= 16 && c.max_rpc_threads <= 65536, "max_rpc_threads",
          "must be in [16, 65536]");
  require(c.metrics_port >= 0 && c.metrics_port <= 65535, "metrics_port", "must be in [0, 65535]");
  require(one_of(c.log_level, {"trace", "debug", "info", "warn", "error", "critical", "off"}),
          "log_level", fmt::format("'{}' is not a spdlog level", c.log_level));
}

std::string effective_dtype(const ServerConfig& c) {
  return c.backend == "cuda" ? "bf16" : "fp32";
}

Json to_json(const ServerConfig& c) {
  return Json{{"model_dir", c.model_dir.string()},
              {"variant", c.variant},
              {"backend", c.backend},
              {"dtype", c.dtype},
              {"tp", c.tp},
              {"device", c.device},
              {"mla_tp_mode", c.mla_tp_mode},
              {"tpla_transform", c.tpla_transform},
              {"tpla_pd_separation", c.tpla_pd_separation},
              {"tpla_slices", c.tpla_slices},
              {"latent_prefill", c.latent_prefill},
              {"latent_prefill_scratch_bytes", c.latent_prefill_scratch_bytes},
              {"page_size", c.page_size},
              {"cache_memory_bytes", c.cache_memory_bytes},
              {"num_pages", c.num_pages},
              {"kv_cache_dtype", c.kv_cache_dtype},
              {"gpu_memory_fraction", c.gpu_memory_fraction},
              {"cuda_graph_max_batch", c.cuda_graph_max_batch},
              {"max_running_seqs", c.max_running_seqs},
              {"max_step_tokens", c.max_step_tokens},
              {"max_context", c.max_context},
              {"max_waiting", c.max_waiting},
              {"prefix_cache", c.prefix_cache},
              {"host", c.host},
              {"port", c.port},
              {"max_rpc_threads", c.max_rpc_threads},
              {"metrics_port", c.metrics_port},
              {"log_level", c.log_level},
              {"log_prompts", c.log_prompts}};
}

EngineOptions engine_options(const ServerConfig& c) {
  EngineOptions o;
  o.max_running_seqs = c.max_running_seqs;
  o.max_step_tokens = c.max_step_tokens;
  o.max_context = c.max_context;
  o.enable_prefix_cache = c.prefix_cache;
  o.max_waiting = c.max_waiting;
  return o;
}

}  // namespace mlra
