// kv-cache-compare: two runners of one configuration, kv_cache_dtype auto then fp8_e4m3 (one at a
// time, so a large model needs memory for one), over the same windows and prompts. Greedy picks
// the highest logit among the text vocabulary's rows, the lowest id on ties.
#include "server/cli/kv_cache_compare_command.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "engine/perplexity.h"
#include "engine/runner_factory.h"
#include "engine/server_config.h"
#include "models/cache_shape.h"
#include "server/cli/perplexity_command.h"
#include "server/serving_stack.h"

namespace mlra {
namespace {

struct CompareArgs {
  std::string config, model_dir, attention, tokens, text;
  int32_t context = 512;
  int64_t max_windows = 1 << 30;
  int32_t prompts = 20;
  int32_t prompt_tokens = 64;
  int32_t generate = 256;
  std::vector<std::string> overrides;
};

using Sequences = std::vector<std::vector<int32_t>>;

int32_t greedy_token(const float* logits, int64_t text_vocab) {
  return int32_t(std::max_element(logits, logits + text_vocab) - logits);
}

// One step of chunks, sequence i on pages [i * pages_per_seq, +pages_per_seq); logits for every
// token of a chunk when all_rows, else for its last.
struct Chunk {
  int32_t seq, start;
  std::vector<int32_t> tokens;
};
StepBatch chunk_step(const std::vector<Chunk>& chunks, int32_t page_size, int32_t pages_per_seq,
                     bool all_rows) {
  StepBatch s;
  s.page_indptr.push_back(0);
  for (size_t i = 0; i < chunks.size(); ++i) {
    const Chunk& c = chunks[i];
    const int32_t end = c.start + int32_t(c.tokens.size());
    for (int32_t p = 0; p < (end + page_size - 1) / page_size; ++p)
      s.page_indices.push_back(c.seq * pages_per_seq + p);
    s.page_indptr.push_back(int32_t(s.page_indices.size()));
    for (size_t k = 0; k < c.tokens.size(); ++k) {
      const int32_t pos = c.start + int32_t(k);
      if (all_rows || k + 1 == c.tokens.size()) s.logit_rows.push_back(s.num_tokens());
      s.tokens.push_back(c.tokens[k]);
      s.positions.push_back(pos);
      s.token_seq.push_back(int32_t(i));
      s.slots.push_back((c.seq * pages_per_seq + pos / page_size) * page_size + pos % page_size);
    }
  }
  return s;
}

// `n` greedy tokens after every prompt: the prompts prefilled in one step, then decode steps of
// all of them together. With `forced`, step k feeds forced[i][k] instead of the greedy token (the
// greedy tokens are still returned): teacher forcing on the decode path, so the prediction at
// every position reads the cache exactly as generation does (a TPLA prefill from position 0
// runs exact MLA over its in-step latents and reads no cache, pd_separation).
Sequences greedy_continuations(ModelRunner& r, const Sequences& prompts, int32_t n,
                               int32_t pages_per_seq, const Sequences* forced = nullptr) {
  const int32_t ps = r.info().page_size;
  const int64_t V = r.config().vocab_size, Vt = r.config().text_vocab_size;
  Sequences out(prompts.size());
  std::vector<Chunk> chunks;
  for (size_t i = 0; i < prompts.size(); ++i) chunks.push_back({int32_t(i), 0, prompts[i]});
  std::vector<float> logits;
  for (int32_t step = 0; step < n; ++step) {
    r.execute(chunk_step(chunks, ps, pages_per_seq, false), logits);
    for (size_t i = 0; i < prompts.size(); ++i) {
      const int32_t t = greedy_token(logits.data() + int64_t(i) * V, Vt);
      out[i].push_back(t);
      const int32_t next = forced ? (*forced)[i][size_t(step)] : t;
      chunks[i] = {int32_t(i), int32_t(prompts[i].size()) + step, {next}};
    }
  }
  return out;
}

struct Run {
  PerplexityResult ppl;
  Sequences greedy;
  int64_t teacher_forced = 0;  // FP8 run only
};

Run run_one(RunnerConfig run, CacheEncoding kv_cache, const CompareArgs& a,
            const std::vector<int32_t>& tokens, const Sequences& prompts,
            const Sequences* reference) {
  run.kv_cache = kv_cache;
  const int32_t ps = run.page_size;
  const int32_t pages_per_seq = (a.prompt_tokens + a.generate + ps - 1) / ps;
  run.num_pages = std::max(
      {run.num_pages, int64_t(a.prompts) * pages_per_seq, int64_t((a.context + ps - 1) / ps)});
  auto runner = make_runner(run);
  if (a.prompt_tokens + a.generate > runner->info().max_context)
    throw std::invalid_argument(fmt::format("--prompt-tokens + --generate exceed the context of {}",
                                            runner->info().max_context));
  Run out;
  out.ppl = evaluate_perplexity(*runner, tokens, a.context, a.max_windows);
  // Against a reference (the unquantized cache's greedy decode) the decode steps are teacher
  // forced, so the prediction at every position reads the cache as generation does and the
  // unquantized cache would agree everywhere: the figure isolates the FP8 cache. Up to a
  // sequence's first disagreement the forced steps are the free-running ones, so the same
  // predictions also give the agreeing prefix.
  out.greedy = greedy_continuations(*runner, prompts, a.generate, pages_per_seq, reference);
  if (reference)
    for (size_t i = 0; i < prompts.size(); ++i)
      for (size_t j = 0; j < out.greedy[i].size(); ++j)
        out.teacher_forced += out.greedy[i][j] == (*reference)[i][j];
  return out;
}

int run_compare(const CompareArgs& a) {
  ServerConfig config;
  std::vector<int32_t> tokens;
  Sequences prompts;
  try {
    config = load_config_or_default(a.config);
    if (!a.model_dir.empty()) apply_config_override(config, "model_dir=" + a.model_dir);
    if (!a.attention.empty()) apply_config_override(config, "variant=" + a.attention);
    for (const auto& o : a.overrides) apply_config_override(config, o);
    validate_server_config(config);
    tokens = evaluation_tokens(a.tokens, a.text, config.tokenizer_dir, config.runner.model_dir);
    // Prompts spread evenly over the data.
    const int64_t stride = (int64_t(tokens.size()) - a.prompt_tokens) / a.prompts;
    if (stride < 1)
      throw std::invalid_argument(fmt::format("{} tokens hold no {} prompts of {} tokens",
                                              tokens.size(), a.prompts, a.prompt_tokens));
    for (int32_t i = 0; i < a.prompts; ++i)
      prompts.emplace_back(tokens.begin() + i * stride,
                           tokens.begin() + i * stride + a.prompt_tokens);
  } catch (const std::exception& e) {
    fmt::print(stderr, "mlra-serve kv-cache-compare: {}\n", e.what());
    return 2;
  }
  spdlog::set_level(spdlog::level::from_str(config.log_level));
  try {
    const RunnerConfig& run = config.runner;
    // Perplexity windows are prefills from position 0: under TPLA's prefill/decode separation they
    // run exact MLA over their unquantized in-step latents and never read the cache.
    const bool ppl_reads_cache =
        !(run.mla_tp_mode == LatentTpMode::kTpla && run.tpla.pd_separation);
    if (!ppl_reads_cache)
      spdlog::warn(
          "tpla_pd_separation: perplexity reads no cache, so ppl_fp8_e4m3 equals ppl_auto; "
          "tpla_pd_separation=false measures the FP8 cache there too");
    const Run p = run_one(run, CacheEncoding::kPlain, a, tokens, prompts, nullptr);
    const Run f = run_one(run, CacheEncoding::kFp8E4M3, a, tokens, prompts, &p.greedy);
    int64_t identical = 0, agreeing_prefix = 0;
    for (size_t i = 0; i < prompts.size(); ++i) {
      const auto& x = p.greedy[i];
      const auto& y = f.greedy[i];
      const int64_t prefix = std::mismatch(x.begin(), x.end(), y.begin()).first - x.begin();
      agreeing_prefix += prefix;
      identical += prefix == int64_t(x.size());
    }
    const double n = double(a.prompts) * a.generate;
    fmt::print(
        "{{\"variant\": \"{}\", \"backend\": \"{}\", \"tp\": {}, \"mla_tp_mode\": \"{}\", "
        "\"windows\": {}, \"tokens\": {}, \"ppl_auto\": {:.4f}, \"ppl_fp8_e4m3\": {:.4f}, "
        "\"ppl_change_pct\": {:.3f}, \"prompts\": {}, \"prompt_tokens\": {}, \"generated\": {}, "
        "\"greedy_identical\": {}, \"greedy_agreeing_prefix_mean\": {:.1f}, "
        "\"teacher_forced_agreement\": {:.4f}, \"ppl_reads_cache\": {}}}\n",
        run.variant, run.backend, run.tp, latent_tp_mode_name(run.mla_tp_mode), p.ppl.windows,
        p.ppl.tokens, p.ppl.perplexity(), f.ppl.perplexity(),
        100.0 * (f.ppl.perplexity() / p.ppl.perplexity() - 1.0), a.prompts, a.prompt_tokens,
        a.generate, identical, double(agreeing_prefix) / a.prompts, double(f.teacher_forced) / n,
        ppl_reads_cache);
    return 0;
  } catch (const std::exception& e) {
    fmt::print(stderr, "mlra-serve kv-cache-compare: {}\n", e.what());
    return 1;
  }
}

}  // namespace

void register_kv_cache_compare_command(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<CompareArgs>();
  CLI::App* cmd = app.add_subcommand(
      "kv-cache-compare", "perplexity and greedy agreement, FP8 cache against the unquantized one");
  cmd->add_option("--config,-c", args->config, "JSON config (default: configs/default.json)");
  cmd->add_option("--model-dir", args->model_dir, "override model_dir");
  cmd->add_option("--attention,--variant", args->attention,
                  "override the attention variant (mlra4, mla, gqa, ...)");
  CLI::Option* tokens =
      cmd->add_option("--tokens", args->tokens, "token file (release .bin format)");
  cmd->add_option("--text", args->text,
                  "UTF-8 text file, GPT-2 tokenized (EOT first; <|endoftext|> separates documents)")
      ->excludes(tokens);
  cmd->add_option("--context", args->context, "perplexity window length")
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--max-windows", args->max_windows, "evaluate at most this many windows")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--prompts", args->prompts, "greedy prompts, spread evenly over the data")
      ->check(CLI::Range(1, 4096));
  cmd->add_option("--prompt-tokens", args->prompt_tokens, "tokens per prompt")
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--generate", args->generate, "greedy tokens per prompt")
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_option("-o,--set", args->overrides, "config override key=value (repeatable)");
  cmd->callback([args, &exit_code] { exit_code = run_compare(*args); });
}

}  // namespace mlra
