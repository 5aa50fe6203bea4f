// Load time with and without the integrity checks, the way a serving rank loads (CPU backend):
// open_checked_checkpoint, then a Rank (its Transformer shard's weights converted onto the
// backend), then the CRC-32 pass joined. "without" is the same call with Integrity::kSkip, which
// skips exactly the shape validation, the CRC-32 pass and the finiteness check. Per (tp, rank) one
// untimed pass warms the page cache, then the two alternate (without, with, without, ...) so drift
// on a shared machine falls on both; the table gives medians. Only one load is held at a time.
#include "server/bench/bench_load.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "engine/rank.h"
#include "kernels/communicator.h"
#include "kernels/thread_communicator.h"
#include "models/model_loader.h"
#include "server/bench/bench_command.h"

namespace mlra {
namespace {

struct LoadArgs {
  std::string model_dir;
  std::string variant = "mlra4";
  std::vector<int> tps{1, 4};
  int rank = 0;  // the rank loaded at every tp > 1 (its shard only)
  int repeats = 3;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// Loads rank `rank` of config.tp and returns the milliseconds until it holds its weights and
// (when verifying) its share of the CRC-32 pass is done. The weights are freed before it returns.
double load_once(const RunnerConfig& config, const ModelConfig& model, int rank,
                 Integrity integrity) {
  const auto t0 = std::chrono::steady_clock::now();
  CheckedCheckpoint checked =
      open_checked_checkpoint(config.model_dir, model, rank, config.tp, integrity);
  // A rank's load runs no collective, so the other ranks' communicators stay idle.
  std::vector<std::unique_ptr<Communicator>> comms;
  if (config.tp == 1)
    comms.push_back(make_single_rank_communicator());
  else
    comms = make_thread_communicators(config.tp);
  Rank loaded(config, model, *checked.checkpoint, rank,
              [&](Backend&) { return std::move(comms[size_t(rank)]); });
  if (checked.checksums) checked.checksums->wait();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

int run_load(const LoadArgs& a) {
  if (a.model_dir.empty()) throw std::invalid_argument("--model-dir is required");
  if (a.repeats < 1) throw std::invalid_argument("--repeats must be at least 1");
  spdlog::set_level(spdlog::level::warn);  // the rank's load lines would interleave the table
  std::printf("# mlra-bench load: %s (%s), cpu backend, %u hardware threads, %d repeats\n",
              a.model_dir.c_str(), a.variant.c_str(), std::thread::hardware_concurrency(),
              a.repeats);
  std::printf("%-8s %3s %5s %14s %14s %10s\n", "variant", "tp", "rank", "without_ms", "with_ms",
              "overhead_%");
  for (int tp : a.tps) {
    RunnerConfig config;
    config.model_dir = a.model_dir;
    config.variant = a.variant;
    config.backend = "cpu";
    config.tp = tp;
    config.num_pages = 1;  // the cache is not what is measured
    const ModelConfig model = runner_model_config(config);
    const int rank = tp == 1 ? 0 : a.rank;
    if (rank < 0 || rank >= tp)
      throw std::invalid_argument("--rank " + std::to_string(rank) + " is not a rank of tp " +
                                  std::to_string(tp));
    load_once(config, model, rank, Integrity::kVerify);  // untimed: warms the page cache
    std::vector<double> without, with;
    for (int i = 0; i < a.repeats; ++i) {
      without.push_back(load_once(config, model, rank, Integrity::kSkip));
      with.push_back(load_once(config, model, rank, Integrity::kVerify));
      std::fprintf(stderr, "tp %d rank %d repeat %d: without %.0f ms, with %.0f ms\n", tp, rank, i,
                   without.back(), with.back());
    }
    const double w0 = median(without), w1 = median(with);
    std::printf("%-8s %3d %5d %14.0f %14.0f %10.1f\n", a.variant.c_str(), tp, rank, w0, w1,
                100.0 * (w1 - w0) / w0);
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace

void register_bench_load(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<LoadArgs>();
  CLI::App* cmd = app.add_subcommand(
      "load", "checkpoint load time on the CPU backend with and without the integrity checks");
  cmd->add_option("--model-dir", args->model_dir, "checkpoint folder")->required();
  cmd->add_option("--attention", args->variant, "attention variant");
  cmd->add_option("--tp", args->tps, "tensor-parallel degrees (default: 1 4)");
  cmd->add_option("--rank", args->rank, "the rank loaded at tp > 1 (default: 0)");
  cmd->add_option("--repeats", args->repeats, "timed pairs per degree (default: 3)");
  bench::on_run(cmd, exit_code, [args] { return run_load(*args); });
}

}  // namespace mlra
