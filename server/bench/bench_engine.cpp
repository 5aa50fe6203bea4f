// Engine host-overhead benchmark. A NullRunner answers every logits row with an ordinary text
// token (so the detokenizer and stop matcher do real work) after holding the step for
// --step-us (a spin, standing in for device time). The runner records when each execute()
// starts and ends; the gap between one step's end and the next one's start is host time in
// which the device would be idle. Only steps where every sequence decodes one token count.
#include "server/bench/bench_engine.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "engine/engine.h"
#include "engine/model_runner.h"
#include "models/gpt2_tokenizer.h"
#include "server/bench/bench_command.h"

namespace mlra {
namespace {

using Clock = std::chrono::steady_clock;

struct EngineBenchArgs {
  std::vector<int> batches{1, 64, 256};
  std::vector<int> contexts{1024, 32768};
  std::vector<int> step_us{0, 5000};
  int decode_tokens = 64;
  int page_size = 64;
  int stop_strings = 1;  // per request (0: none): the stop matcher's per-token cost
  std::string tokenizer_dir = default_tokenizer_dir().string();
};

class NullRunner : public ModelRunner {
 public:
  NullRunner(int64_t num_pages, int32_t page_size, int64_t max_context, int step_us, int batch)
      : step_us_(step_us), batch_(batch) {
    config_.vocab_size = 50304;
    config_.text_vocab_size = 50257;
    config_.eot_token = 50256;
    info_.backend = "null";
    info_.page_size = page_size;
    info_.num_pages = num_pages;
    info_.max_context = max_context;
  }
  const ModelConfig& config() const override { return config_; }
  RunnerInfo info() const override { return info_; }

  // The first step waits until every request is queued, so all run their decodes in phase.
  void open_gate() {
    std::lock_guard lock(mu_);
    gate_open_ = true;
    gate_cv_.notify_all();
  }

  void execute(const StepBatch& step, const SamplingBatch& sampling, SampledTokens& out) override {
    {
      std::unique_lock lock(mu_);
      gate_cv_.wait(lock, [&] { return gate_open_; });
    }
    const Clock::time_point start = Clock::now();
    while (Clock::now() - start < std::chrono::microseconds(step_us_)) {
    }
    out.clear();
    for (size_t r = 0; r < step.logit_rows.size(); ++r) {
      const int32_t t = step.logit_rows[r];
      // Ordinary word-piece ids (" the", " of", ... live in 200..20000).
      out.tokens.push_back(int32_t(200 + (step.positions[t] * 7919 + r * 104729) % 19800));
      out.logprobs.push_back(0.0f);
      out.top_indptr.push_back(0);
    }
    (void)sampling;
    const Clock::time_point end = Clock::now();
    // A pure decode step of the whole batch (the first request runs one step ahead).
    const bool decode = step.num_tokens() == step.num_seqs() && step.num_seqs() >= batch_ - 1;
    std::lock_guard lock(mu_);
    if (decode && have_last_ && last_was_decode_)
      gaps_us_.push_back(std::chrono::duration<double, std::micro>(start - last_end_).count());
    last_end_ = end;
    have_last_ = true;
    last_was_decode_ = decode;
    if (decode) ++decode_steps_;
  }
  void execute(const StepBatch&, std::vector<float>&) override {
    throw RunnerError("null runner: no logits");
  }

  std::vector<double> gaps_us() const {
    std::lock_guard lock(mu_);
    return gaps_us_;
  }

 private:
  ModelConfig config_;
  RunnerInfo info_;
  int step_us_;
  int batch_;
  mutable std::mutex mu_;
  std::vector<double> gaps_us_;
  Clock::time_point last_end_;
  bool have_last_ = false, last_was_decode_ = false, gate_open_ = false;
  std::condition_variable gate_cv_;
  int64_t decode_steps_ = 0;
};

double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, size_t(q * double(v.size())))];
}

int run_engine_bench(const EngineBenchArgs& a) {
  spdlog::set_level(spdlog::level::warn);
  const Gpt2Tokenizer tokenizer = Gpt2Tokenizer::load(a.tokenizer_dir);
  fmt::print("{:>6} {:>7} {:>8} {:>9} {:>9} {:>9} {:>10} {:>10}\n", "batch", "ctx", "step_us",
             "gap_p50", "gap_p90", "steps", "tok/s", "ideal_tok/s");
  for (int step_us : a.step_us)
    for (int ctx : a.contexts)
      for (int batch : a.batches) {
        const int64_t pages_per_seq = (ctx + a.decode_tokens + a.page_size) / a.page_size + 1;
        const int64_t num_pages = pages_per_seq * batch + 16;
        auto runner = std::make_unique<NullRunner>(
            num_pages, a.page_size, ctx + a.decode_tokens + a.page_size, step_us, batch);
        NullRunner* null = runner.get();
        EngineOptions o;
        o.max_running_seqs = batch;
        o.max_step_tokens = batch * (ctx + 1);  // every prompt in one step: then pure decode
        o.enable_prefix_cache = false;
        o.max_waiting = batch + 1;
        Engine engine(std::move(runner), tokenizer, o);
        std::mutex mu;
        std::condition_variable cv;
        int finished = 0, errors = 0;
        std::mt19937 rng(7);
        std::uniform_int_distribution<int32_t> tok(200, 20000);
        const Clock::time_point start = Clock::now();
        for (int b = 0; b < batch; ++b) {
          GenerationRequest r;
          for (int i = 0; i < ctx; ++i) r.prompt_tokens.push_back(tok(rng));
          r.params.max_tokens = a.decode_tokens;
          r.params.temperature = 0.0f;
          r.params.ignore_eos = true;
          for (int s = 0; s < a.stop_strings; ++s)
            r.params.stop.push_back("\n\n###" + std::to_string(s));
          engine.submit(std::move(r), [&](GenerationChunk&& c) {
            if (c.finish_reason == FinishReason::kNone) return;
            std::lock_guard lock(mu);
            if (c.finish_reason != FinishReason::kLength && errors++ == 0)
              fmt::print(stderr, "request ended {}: {}\n", finish_reason_name(c.finish_reason),
                         c.error_message);
            ++finished;
            cv.notify_all();
          });
        }
        null->open_gate();
        {
          std::unique_lock lock(mu);
          cv.wait(lock, [&] { return finished == batch; });
        }
        (void)start;
        const std::vector<double> gaps = null->gaps_us();
        const double p50 = percentile(gaps, 0.5);
        // Decode throughput if every step paid step_us of device time plus the median gap.
        const double per_step_us = double(step_us) + p50;
        fmt::print("{:>6} {:>7} {:>8} {:>9.1f} {:>9.1f} {:>9} {:>10.0f} {:>10}\n", batch, ctx,
                   step_us, p50, percentile(gaps, 0.9), gaps.size(),
                   per_step_us > 0 ? batch / per_step_us * 1e6 : 0.0,
                   step_us > 0 ? fmt::format("{:.0f}", batch / double(step_us) * 1e6) : "-");
        std::fflush(stdout);
        engine.shutdown(false);
      }
  fmt::print(
      "gap: host time between the end of one decode step's runner call and the start of "
      "the next (the device would idle); tok/s = batch / (step_us + gap_p50)\n");
  return 0;
}

}  // namespace

void register_bench_engine(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<EngineBenchArgs>();
  CLI::App* cmd =
      app.add_subcommand("engine", "engine host time per decode step (device idle between steps)");
  cmd->add_option("--batch", args->batches, "concurrent sequences");
  cmd->add_option("--context", args->contexts, "prompt tokens per sequence");
  cmd->add_option("--step-us", args->step_us, "device time each runner call holds the step");
  cmd->add_option("--decode-tokens", args->decode_tokens, "tokens generated per sequence");
  cmd->add_option("--stop-strings", args->stop_strings, "stop strings per request");
  cmd->add_option("--tokenizer-dir", args->tokenizer_dir, "GPT-2 tokenizer folder");
  bench::on_run(cmd, exit_code, [args] { return run_engine_bench(*args); });
}

}  // namespace mlra
