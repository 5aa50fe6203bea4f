// build_serving_stack: tokenizer, runner (engine/runner_factory.h), engine, in that order, with
// one log line each so a slow start shows where the time goes.
#include "server/serving_stack.h"

#include <system_error>

#include <spdlog/spdlog.h>

#include "engine/runner_factory.h"
#include "models/cache_shape.h"

namespace mlra {

std::filesystem::path tokenizer_dir_for(const std::string& configured,
                                        const std::filesystem::path& model_dir) {
  if (!configured.empty()) return configured;
  for (const char* file : {"encoder.json", "vocab.json", "tokenizer.json"}) {
    if (std::filesystem::exists(model_dir / file)) return model_dir;
  }
  return default_tokenizer_dir();
}

std::filesystem::path find_default_config() {
  const std::filesystem::path relative = std::filesystem::path("configs") / "default.json";
  if (std::filesystem::exists(relative)) return std::filesystem::absolute(relative);
  std::error_code ec;
  std::filesystem::path dir = std::filesystem::read_symlink("/proc/self/exe", ec).parent_path();
  if (ec) return {};
  // build/<preset>/server/mlra-serve -> repository root; <prefix>/bin -> <prefix>/share.
  for (int up = 0; up < 5 && !dir.empty(); ++up, dir = dir.parent_path()) {
    if (std::filesystem::exists(dir / relative)) return dir / relative;
    const auto installed = dir / "share" / "mlra-serve" / relative;
    if (std::filesystem::exists(installed)) return installed;
    if (dir == dir.parent_path()) break;
  }
  return {};
}

ServerConfig load_config_or_default(const std::string& file) {
  const std::filesystem::path path =
      file.empty() ? find_default_config() : std::filesystem::path(file);
  if (path.empty()) throw ConfigError("no --config given and configs/default.json not found");
  return load_server_config(path);
}

ServingStack build_serving_stack(const ServerConfig& config,
                                 std::shared_ptr<EngineMetrics> metrics) {
  ServingStack stack;
  const RunnerConfig& run = config.runner;
  const std::filesystem::path tok_dir = tokenizer_dir_for(config.tokenizer_dir, run.model_dir);
  stack.tokenizer = std::make_unique<Gpt2Tokenizer>(Gpt2Tokenizer::load(tok_dir));
  spdlog::info("tokenizer: {} ({} ids)", tok_dir.string(), stack.tokenizer->vocab_size());

  spdlog::info("loading {} from {} (backend {}, tp {}, device {})", run.variant,
               run.model_dir.string(), run.backend, run.tp, run.device);
  std::unique_ptr<ModelRunner> runner = make_runner(run);
  const RunnerInfo info = runner->info();
  spdlog::info(
      "model loaded: {} pages of {} tokens, {} cache bytes/token/rank (kv_cache_dtype {}), {} "
      "weight bytes/rank",
      info.num_pages, info.page_size, info.cache_bytes_per_token, kv_cache_dtype_name(run.kv_cache),
      info.weight_bytes_per_rank);
  EngineOptions options = engine_options(config);
  options.metrics = std::move(metrics);
  stack.engine = std::make_unique<Engine>(std::move(runner), *stack.tokenizer, options);
  stack.labels.mla_tp_mode = latent_tp_mode_name(run.mla_tp_mode);
  stack.labels.dtype = effective_dtype(config);
  stack.labels.kv_cache_dtype = kv_cache_dtype_name(run.kv_cache);
  return stack;
}

}  // namespace mlra
