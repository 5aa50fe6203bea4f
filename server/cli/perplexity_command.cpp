// perplexity: windows of --context tokens, positions restarting at 0 (engine/perplexity.h).
#include "server/cli/perplexity_command.h"

#include <cmath>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "engine/perplexity.h"
#include "engine/runner_factory.h"
#include "engine/server_config.h"
#include "models/cache_shape.h"
#include "models/gpt2_tokenizer.h"
#include "models/utf8.h"
#include "server/serving_stack.h"

namespace mlra {
namespace {

struct PerplexityArgs {
  std::string config, model_dir, attention, tokens, text;
  int32_t context = 512;
  int64_t max_windows = 1 << 30;
  int32_t prefill = 0;
  std::vector<std::string> overrides;
};

int run_perplexity(const PerplexityArgs& a) {
  ServerConfig config;
  std::vector<int32_t> tokens;
  try {
    config = load_config_or_default(a.config);
    if (!a.model_dir.empty()) apply_config_override(config, "model_dir=" + a.model_dir);
    if (!a.attention.empty()) apply_config_override(config, "variant=" + a.attention);
    for (const auto& o : a.overrides) apply_config_override(config, o);
    validate_server_config(config);
    tokens = evaluation_tokens(a.tokens, a.text, config.tokenizer_dir, config.runner.model_dir);
  } catch (const std::exception& e) {
    fmt::print(stderr, "mlra-serve perplexity: {}\n", e.what());
    return 2;
  }
  spdlog::set_level(spdlog::level::from_str(config.log_level));
  try {
    RunnerConfig run = config.runner;
    const int64_t pages = (a.context + run.page_size - 1) / run.page_size;
    if (run.num_pages < pages) run.num_pages = pages;  // one window's pages are all it needs
    auto runner = make_runner(run);
    const PerplexityResult r =
        evaluate_perplexity(*runner, tokens, a.context, a.max_windows, a.prefill);
    const std::string continuation =
        a.prefill > 0 ? fmt::format(
                            ", \"prefill\": {}, \"loss_after_prefill\": {:.6f}, "
                            "\"ppl_after_prefill\": {:.4f}",
                            a.prefill, r.mean_nll_continuation, std::exp(r.mean_nll_continuation))
                      : "";
    fmt::print(
        "{{\"variant\": \"{}\", \"backend\": \"{}\", \"tp\": {}, \"mla_tp_mode\": \"{}\", "
        "\"kv_cache_dtype\": \"{}\", \"windows\": {}, \"tokens\": {}, \"loss\": {:.6f}, "
        "\"ppl\": {:.4f}, \"loss_masked\": {:.6f}, \"ppl_masked\": {:.4f}{}}}\n",
        run.variant, run.backend, run.tp, latent_tp_mode_name(run.mla_tp_mode),
        kv_cache_dtype_name(run.kv_cache), r.windows, r.tokens, r.mean_nll, r.perplexity(),
        r.mean_nll_masked, r.perplexity_masked(), continuation);
    return 0;
  } catch (const std::exception& e) {
    fmt::print(stderr, "mlra-serve perplexity: {}\n", e.what());
    return 1;
  }
}

}  // namespace

std::vector<int32_t> evaluation_tokens(const std::string& token_file, const std::string& text_file,
                                       const std::string& tokenizer_dir,
                                       const std::filesystem::path& model_dir) {
  if (token_file.empty() == text_file.empty())
    throw std::runtime_error("give exactly one of --tokens and --text");
  if (!token_file.empty()) return read_token_file(token_file);
  std::ifstream in(text_file, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open text file " + text_file);
  const std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  if (in.bad()) throw std::runtime_error("cannot read text file " + text_file);
  if (!utf8_is_valid(text)) throw std::runtime_error(text_file + " is not valid UTF-8");
  const Gpt2Tokenizer tokenizer = Gpt2Tokenizer::load(tokenizer_dir_for(tokenizer_dir, model_dir));
  std::vector<int32_t> tokens{tokenizer.eot_id()};
  const std::vector<int32_t> body = tokenizer.encode_with_special(text);
  if (body.empty()) throw std::runtime_error(text_file + " holds no text");
  tokens.insert(tokens.end(), body.begin(), body.end());
  return tokens;
}

void register_perplexity_command(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<PerplexityArgs>();
  CLI::App* cmd = app.add_subcommand("perplexity", "held-out perplexity on a token or text file");
  cmd->add_option("--config,-c", args->config, "JSON config (default: configs/default.json)");
  cmd->add_option("--model-dir", args->model_dir, "override model_dir");
  cmd->add_option("--attention,--variant", args->attention,
                  "override the attention variant (mlra4, mla, gqa, ...)");
  CLI::Option* tokens =
      cmd->add_option("--tokens", args->tokens, "token file (release .bin format)");
  cmd->add_option("--text", args->text,
                  "UTF-8 text file, GPT-2 tokenized (EOT first; <|endoftext|> separates documents)")
      ->excludes(tokens);
  cmd->add_option("--context", args->context, "window length")->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--max-windows", args->max_windows, "evaluate at most this many windows")
      ->check(CLI::PositiveNumber);
  cmd->add_option(
         "--prefill", args->prefill,
         "run each window as a prefill of this many tokens, then the rest as a continuation "
         "(decode's numerics; measures TPLA pd separation)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("-o,--set", args->overrides, "config override key=value (repeatable)");
  cmd->callback([args, &exit_code] { exit_code = run_perplexity(*args); });
}

}  // namespace mlra
