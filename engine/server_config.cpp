// Server config parsing: one setter per server key, the runner keys from runner_config.cpp (so
// unknown keys and type errors name the key), range validation, overrides and JSON output
// (header).
#include "engine/server_config.h"

#include <fstream>
#include <functional>
#include <map>
#include <system_error>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "engine/config_value.h"
#include "models/gpt2_tokenizer.h"

namespace mlra {

namespace {

using Json = nlohmann::json;
using Setter = std::function<void(ServerConfig&, const std::string& key, const Json&,
                                  const std::filesystem::path&)>;

template <typename T>
Setter field(T ServerConfig::*member) {
  return [member](ServerConfig& c, const std::string& key, const Json& v,
                  const std::filesystem::path&) { c.*member = config_value<T>(key, v); };
}

// A file path that resolves like model_dir: relative to the config file's folder.
Setter path_field(std::string ServerConfig::*member) {
  return [member](ServerConfig& c, const std::string& key, const Json& v,
                  const std::filesystem::path& base) {
    const std::filesystem::path p = config_value<std::string>(key, v);
    c.*member = p.empty() || p.is_absolute() ? p.string() : (base / p).lexically_normal().string();
  };
}

const std::map<std::string, Setter>& setters() {
  static const std::map<std::string, Setter> table = {
      {"dtype", field(&ServerConfig::dtype)},
      {"max_running_seqs", field(&ServerConfig::max_running_seqs)},
      {"max_step_tokens", field(&ServerConfig::max_step_tokens)},
      {"max_waiting", field(&ServerConfig::max_waiting)},
      {"prefix_cache", field(&ServerConfig::prefix_cache)},
      {"host", field(&ServerConfig::host)},
      {"port", field(&ServerConfig::port)},
      {"max_rpc_threads", field(&ServerConfig::max_rpc_threads)},
      {"metrics_port", field(&ServerConfig::metrics_port)},
      {"http_port", field(&ServerConfig::http_port)},
      {"chat_template", path_field(&ServerConfig::chat_template)},
      {"tokenizer_dir", path_field(&ServerConfig::tokenizer_dir)},
      {"log_level", field(&ServerConfig::log_level)},
      {"log_prompts", field(&ServerConfig::log_prompts)},
      {"api_key", field(&ServerConfig::api_key)},
      {"tls_cert_file", path_field(&ServerConfig::tls_cert_file)},
      {"tls_key_file", path_field(&ServerConfig::tls_key_file)},
      {"grpc_memory_bytes", field(&ServerConfig::grpc_memory_bytes)},
  };
  return table;
}

void set_key(ServerConfig& c, const std::string& key, const Json& value,
             const std::filesystem::path& base) {
  if (auto it = setters().find(key); it != setters().end()) return it->second(c, key, value, base);
  if (!set_runner_key(c.runner, key, value, base))
    throw ConfigError(fmt::format("unknown config key '{}'", key));
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
  validate_runner_config(c.runner);
  const std::string& backend = c.runner.backend;
  require(one_of(c.dtype, {"auto", "fp32", "bf16"}), "dtype",
          fmt::format("'{}' is not auto, fp32 or bf16", c.dtype));
  require(
      c.dtype == "auto" || backend != "cpu" || c.dtype == "fp32", "dtype",
      fmt::format("'{}' needs backend cuda: the CPU backend computes in fp32 (use auto)", c.dtype));
  require(c.dtype == "auto" || backend != "cuda" || c.dtype == "bf16", "dtype",
          fmt::format("'{}' is not what the CUDA backend runs: bf16 weights, activations and cache "
                      "(use auto)",
                      c.dtype));
  require(c.max_running_seqs >= 1, "max_running_seqs", "must be >= 1");
  require(c.max_step_tokens >= 1, "max_step_tokens", "must be >= 1");
  require(c.max_waiting >= 1, "max_waiting", "must be >= 1");
  require(!c.host.empty(), "host", "must not be empty");
  require(c.port >= 0 && c.port <= 65535, "port", "must be in [0, 65535]");
  require(c.max_rpc_threads >= 16 && c.max_rpc_threads <= 65536, "max_rpc_threads",
          "must be in [16, 65536]");
  require(c.metrics_port >= 0 && c.metrics_port <= 65535, "metrics_port", "must be in [0, 65535]");
  require(c.http_port >= 0 && c.http_port <= 65535, "http_port", "must be in [0, 65535]");
  if (!c.tokenizer_dir.empty()) {
    std::error_code ec;
    require(std::filesystem::is_directory(c.tokenizer_dir, ec), "tokenizer_dir",
            fmt::format("'{}' is not a folder", c.tokenizer_dir));
    require(has_tokenizer_files(c.tokenizer_dir), "tokenizer_dir",
            fmt::format("'{}' holds no tokenizer files (encoder.json + vocab.bpe, vocab.json + "
                        "merges.txt, or tokenizer.json)",
                        c.tokenizer_dir));
  }
  require(one_of(c.log_level, {"trace", "debug", "info", "warn", "error", "critical", "off"}),
          "log_level", fmt::format("'{}' is not a spdlog level", c.log_level));
  require(c.tls_cert_file.empty() == c.tls_key_file.empty(), "tls_cert_file",
          "tls_cert_file and tls_key_file go together");
  require(c.grpc_memory_bytes == 0 || c.grpc_memory_bytes >= (int64_t(16) << 20),
          "grpc_memory_bytes", "must be 0 (gRPC's default) or at least 16 MiB");
}

std::string effective_dtype(const ServerConfig& c) {
  return c.runner.backend == "cuda" ? "bf16" : "fp32";
}

Json to_json(const ServerConfig& c) {
  Json j = Json{{"dtype", c.dtype},
                {"max_running_seqs", c.max_running_seqs},
                {"max_step_tokens", c.max_step_tokens},
                {"max_waiting", c.max_waiting},
                {"prefix_cache", c.prefix_cache},
                {"host", c.host},
                {"port", c.port},
                {"max_rpc_threads", c.max_rpc_threads},
                {"metrics_port", c.metrics_port},
                {"http_port", c.http_port},
                {"chat_template", c.chat_template},
                {"tokenizer_dir", c.tokenizer_dir},
                {"log_level", c.log_level},
                {"log_prompts", c.log_prompts},
                {"tls_cert_file", c.tls_cert_file},
                {"tls_key_file", c.tls_key_file},
                {"grpc_memory_bytes", c.grpc_memory_bytes}};  // api_key: never written out
  j.update(to_json(c.runner));
  return j;
}

EngineOptions engine_options(const ServerConfig& c) {
  EngineOptions o;
  o.max_running_seqs = c.max_running_seqs;
  o.max_step_tokens = c.max_step_tokens;
  o.max_context = c.runner.max_context;
  o.enable_prefix_cache = c.prefix_cache;
  o.max_waiting = c.max_waiting;
  return o;
}

}  // namespace mlra
