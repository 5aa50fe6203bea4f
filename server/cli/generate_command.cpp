// generate: the engine callback only pushes into a ChunkQueue; the main thread prints, so a slow
// stdout never stalls the engine thread (the same hand-off the gRPC service uses).
#include "server/cli/generate_command.h"

#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "server/chunk_queue.h"
#include "server/cli/sampling_flags.h"
#include "server/serving_stack.h"

namespace mlra {
namespace {

struct GenerateArgs {
  std::string config;  // the file to start from; empty: configs/default.json
  std::optional<std::string> model_dir, tokenizer_dir, attention, backend, dtype;
  std::optional<int32_t> tp;
  std::vector<std::string> overrides;
  std::string prompt;
  SamplingFlags sampling;
  bool show_ids = false;
};

ServerConfig resolve_config(const GenerateArgs& a) {
  ServerConfig config = load_config_or_default(a.config);
  auto set = [&](const char* key, const std::string& value) {
    apply_config_override(config, fmt::format("{}={}", key, value));
  };
  if (a.model_dir) set("model_dir", *a.model_dir);
  if (a.tokenizer_dir) set("tokenizer_dir", *a.tokenizer_dir);
  if (a.attention) set("variant", *a.attention);
  if (a.backend) set("backend", *a.backend);
  if (a.dtype) set("dtype", *a.dtype);
  if (a.tp) set("tp", std::to_string(*a.tp));
  for (const auto& o : a.overrides) apply_config_override(config, o);
  validate_server_config(config);
  if (!std::filesystem::is_directory(config.runner.model_dir)) {
    throw ConfigError(
        fmt::format("model_dir '{}' is not a folder", config.runner.model_dir.string()));
  }
  return config;
}

int run_generate(const GenerateArgs& a) {
  ServerConfig config;
  try {
    config = resolve_config(a);
  } catch (const std::exception& e) {
    fmt::print(stderr, "mlra-serve generate: {}\n", e.what());
    return 2;
  }
  spdlog::set_level(spdlog::level::from_str(config.log_level));
  try {
    ServingStack stack = build_serving_stack(config);
    GenerationRequest request;
    request.request_id = "generate";
    request.prompt_tokens = stack.tokenizer->encode(a.prompt);
    request.params = to_sampling_params(to_proto(a.sampling));
    if (auto error = stack.engine->validate(request)) {
      fmt::print(stderr, "mlra-serve generate: {}\n", error->what());
      return 2;
    }
    auto queue = std::make_shared<ChunkQueue>();
    stack.engine->submit(std::move(request),
                         [queue](GenerationChunk&& chunk) { queue->push(std::move(chunk)); });
    std::vector<int32_t> ids;
    for (;;) {
      std::optional<GenerationChunk> chunk = queue->pop_for(std::chrono::milliseconds(100));
      if (!chunk) continue;
      ids.insert(ids.end(), chunk->token_ids.begin(), chunk->token_ids.end());
      fmt::print("{}", chunk->text);
      std::fflush(stdout);
      if (chunk->finish_reason == FinishReason::kNone) continue;
      fmt::print(stderr, "\n[finish_reason={} prompt_tokens={} completion_tokens={}]\n",
                 finish_reason_name(chunk->finish_reason), chunk->usage.prompt_tokens,
                 chunk->usage.completion_tokens);
      if (a.show_ids) fmt::print(stderr, "[token_ids={}]\n", fmt::join(ids, ","));
      if (chunk->finish_reason == FinishReason::kError) {
        spdlog::error("{}", chunk->error_message);
        return 1;
      }
      break;
    }
    stack.engine->shutdown(true);
  } catch (const RequestError& e) {
    fmt::print(stderr, "mlra-serve generate: {}\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    return 1;
  }
  return 0;
}

}  // namespace

void register_generate_command(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<GenerateArgs>();
  CLI::App* cmd = app.add_subcommand("generate", "generate offline (no server) to stdout");
  cmd->add_option("--config,-c", args->config, "JSON config (default: configs/default.json)");
  cmd->add_option("--model-dir", args->model_dir, "override model_dir");
  cmd->add_option("--tokenizer-dir", args->tokenizer_dir,
                  "override tokenizer_dir (default: the model folder's own, else GPT-2)");
  cmd->add_option("--attention,--variant", args->attention, "override the attention variant");
  cmd->add_option("--backend", args->backend, "override backend: cpu | cuda");
  cmd->add_option("--dtype", args->dtype, "auto | fp32 (cpu) | bf16 (cuda)");
  cmd->add_option("--tp", args->tp, "override the tensor-parallel degree");
  cmd->add_option("--set", args->overrides, "any config key: --set key=value (repeatable)");
  cmd->add_option("--prompt", args->prompt, "prompt text")->required();
  add_sampling_flags(*cmd, args->sampling);
  cmd->add_flag("--show-ids", args->show_ids, "also print the generated token ids (stderr)");
  cmd->callback([args, &exit_code] {
    spdlog::set_default_logger(spdlog::stderr_color_mt("mlra-serve"));
    exit_code = run_generate(*args);
  });
}

}  // namespace mlra
