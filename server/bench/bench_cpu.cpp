// CPU throughput: prefill `prompt` tokens per sequence, then `steps` decode steps of the whole
// batch; wall-clock tokens/s for both phases (median over repeats).
#include "server/bench/bench_cpu.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "engine/local_runner.h"
#include "server/bench/bench_command.h"

namespace mlra {
namespace {

struct CpuArgs {
  std::string model_dir = std::string(MLRA_SOURCE_DIR) + "/tests/data/tiny/mlra4";
  std::string variant = "mlra4";
  std::vector<int> batches{1, 8};
  int prompt = 64;
  int steps = 32;
  int repeats = 3;
};

StepBatch make_step(int batch, int start, int len, int32_t ps, int32_t pages_per_seq) {
  StepBatch s;
  s.page_indptr.push_back(0);
  for (int i = 0; i < batch; ++i) {
    const int end = start + len;
    for (int p = 0; p < (end + ps - 1) / ps; ++p) s.page_indices.push_back(i * pages_per_seq + p);
    s.page_indptr.push_back(int32_t(s.page_indices.size()));
    for (int t = start; t < end; ++t) {
      s.tokens.push_back((i * 131 + t * 7) % 500);
      s.positions.push_back(t);
      s.token_seq.push_back(i);
      s.slots.push_back((i * pages_per_seq + t / ps) * ps + t % ps);
    }
    s.logit_rows.push_back(int32_t(s.tokens.size()) - 1);
  }
  return s;
}

int run_cpu(const CpuArgs& a) {
  spdlog::set_level(spdlog::level::warn);
  const int32_t ps = 16;
  const int32_t pages_per_seq = (a.prompt + a.steps + ps - 1) / ps;
  fmt::print("{:<8} {:>6} {:>14} {:>14}\n", "variant", "batch", "prefill tok/s", "decode tok/s");
  for (int b : a.batches) {
    std::vector<double> pre, dec;
    for (int r = 0; r < a.repeats; ++r) {
      RunnerConfig o;
      o.model_dir = a.model_dir;
      o.variant = a.variant;
      o.page_size = ps;
      o.num_pages = int64_t(b) * pages_per_seq;
      auto runner = make_local_runner(o);
      std::vector<float> logits;
      auto t0 = std::chrono::steady_clock::now();
      runner->execute(make_step(b, 0, a.prompt, ps, pages_per_seq), logits);
      auto t1 = std::chrono::steady_clock::now();
      for (int k = 0; k < a.steps; ++k)
        runner->execute(make_step(b, a.prompt + k, 1, ps, pages_per_seq), logits);
      auto t2 = std::chrono::steady_clock::now();
      pre.push_back(double(b) * a.prompt / std::chrono::duration<double>(t1 - t0).count());
      dec.push_back(double(b) * a.steps / std::chrono::duration<double>(t2 - t1).count());
    }
    std::sort(pre.begin(), pre.end());
    std::sort(dec.begin(), dec.end());
    fmt::print("{:<8} {:>6} {:>14.0f} {:>14.0f}\n", a.variant, b, pre[pre.size() / 2],
               dec[dec.size() / 2]);
  }
  return 0;
}

}  // namespace

void register_bench_cpu(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<CpuArgs>();
  CLI::App* cmd = app.add_subcommand("cpu", "CPU backend tokens/s on a small model");
  cmd->add_option("--model-dir", args->model_dir, "checkpoint folder");
  cmd->add_option("--attention", args->variant, "attention variant");
  cmd->add_option("--batch", args->batches, "batch sizes");
  cmd->add_option("--prompt", args->prompt, "prompt tokens per sequence");
  cmd->add_option("--steps", args->steps, "decode steps");
  bench::on_run(cmd, exit_code, [args] { return run_cpu(*args); });
}

}  // namespace mlra
