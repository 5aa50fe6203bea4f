// Decode benchmark: builds the rank-0 Transformer of a TP plan on the CUDA backend from a
// synthetic checkpoint, fills page tables for `batch` sequences of `context` tokens, and times
// forward() of one decode token per sequence as the server runs it (host step preparation, upload,
// all layers, greedy sampling on the GPU and the download of the token ids), eagerly and replayed
// from CUDA graphs in the same run. --full-logits downloads every row's f32 logits instead (51 MB
// per step at batch 256, which the server never copies). --kernels sets the kernel options; given
// several option sets, every point runs under each (column k) and a same-run table compares them.
// The cache content is whatever the allocator returned: timing only. The roofline adds the
// measured NCCL all-reduce time (2 per layer) when the machine has the TP degree's GPUs. Where
// MLRA-4 and MLA both ran, their time ratio is printed beside the ratio their bytes allow.
// Points at --fp8-min-context and longer run once more with the FP8 cache (kv_cache_dtype
// fp8_e4m3) under the first option set, as the last k: the same-run table then gives the bf16
// time over the FP8 time.
// Device time per op class (dev_ms = mm_ms + attn_ms + the rest: norms, rope, cache writes,
// latent projections, embedding, LM-head gather) comes from one eager step enqueued behind a
// gate: the stream waits in a host function until the whole step is enqueued, so the events
// around each op measure device time, not host launch gaps (sampling excluded).
#include "server/bench/bench_decode.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <fmt/format.h>

#include "engine/sampling_batch.h"
#include "kernels/backend.h"
#include "kernels/communicator.h"
#include "kernels/sampling.h"
#include "models/cache_shape.h"
#include "models/model_config.h"
#include "models/shard_plan.h"
#include "models/synthetic_checkpoint.h"
#include "models/transformer.h"
#include "server/bench/allreduce_timer.h"
#include "server/bench/bench_command.h"
#include "server/bench/bench_cuda_util.h"
#ifdef MLRA_HAVE_CUDA
#include <cuda_runtime.h>

#include "kernels/cuda_backend.h"
#endif

namespace mlra {
namespace {

struct DecodeArgs {
  std::vector<std::string> variants{"mlra_4", "mla", "gqa"};
  std::vector<int> tps{1, 4};
  std::vector<int> batches{1, 8, 64};
  std::vector<int> contexts{1024, 32768};
  int64_t max_cache_gb = 40;
  int iters = 20;
  int graph_max_batch = 256;  // 0: eager only
  bool full_logits = false;   // download [batch, vocab] f32 logits instead of sampling on device
  std::string config_dir = std::string(MLRA_SOURCE_DIR) + "/configs/2.9b";
  std::vector<std::string> kernels;  // --kernels: "kernels" config objects, one run each
  int fp8_min_context = 32768;       // FP8 cache run from this context on; 0: none
};

#ifdef MLRA_HAVE_CUDA

// Device time of one eager step and its matrix products and attention: the stream is held by a
// host function until `enqueue` returned (or 2 s passed, should the launch queue fill: then
// `gated` is false and the figures include host gaps).
struct DeviceTimes {
  double total_ms = 0.0, matmul_ms = 0.0, attention_ms = 0.0;
  bool gated = true;
};

template <class Enqueue>
DeviceTimes gated_device_times(Backend& backend, Enqueue enqueue) {
  cudaStream_t stream = cuda_stream_of(backend);
  backend.synchronize();
  std::atomic<bool> open{false}, enqueued{false};
  MLRA_CUDA_CHECK(cudaLaunchHostFunc(
      stream,
      [](void* flag) {
        while (!static_cast<std::atomic<bool>*>(flag)->load()) std::this_thread::yield();
      },
      &open));
  cudaEvent_t start, stop;
  MLRA_CUDA_CHECK(cudaEventCreate(&start));
  MLRA_CUDA_CHECK(cudaEventCreate(&stop));
  MLRA_CUDA_CHECK(cudaEventRecord(start, stream));
  std::thread watchdog([&] {
    for (int i = 0; i < 2000 && !enqueued.load(); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    open = true;
  });
  backend.set_op_timing(true);
  enqueue();
  MLRA_CUDA_CHECK(cudaEventRecord(stop, stream));
  DeviceTimes t;
  t.gated = !open.load();
  enqueued = true;
  watchdog.join();
  const Backend::OpTimes op = backend.take_op_times();
  backend.set_op_timing(false);
  MLRA_CUDA_CHECK(cudaEventSynchronize(stop));
  float ms = 0.0f;
  MLRA_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  t.total_ms = ms, t.matmul_ms = op.matmul_ms, t.attention_ms = op.attention_ms;
  return t;
}

// One measured point: the best of eager and graph time, and its roofline.
struct Point {
  double best_ms = 0.0, roof_ms = 0.0;
};
using PointKey = std::tuple<std::string, int, int, int, size_t>;  // variant, tp, batch, ctx, k

// Same-run ratios: every option set against the first, and MLRA-4 against MLA.
void print_comparisons(const std::map<PointKey, Point>& points, size_t option_sets) {
  if (option_sets > 1) {
    fmt::print("\nsame-run comparison: best ms per kernel option set (k), ratio = k0 / k\n");
    fmt::print("{:<9} {:>3} {:>6} {:>6} {:>9} {:>3} {:>9} {:>7}\n", "variant", "tp", "batch", "ctx",
               "k0_ms", "k", "k_ms", "ratio");
    for (const auto& [key, p] : points) {
      const auto& [v, tp, b, ctx, k] = key;
      if (k == 0) continue;
      const auto base = points.find({v, tp, b, ctx, 0});
      if (base == points.end()) continue;
      fmt::print("{:<9} {:>3} {:>6} {:>6} {:>9.3f} {:>3} {:>9.3f} {:>7.2f}\n", v, tp, b, ctx,
                 base->second.best_ms, k, p.best_ms, base->second.best_ms / p.best_ms);
    }
  }
  bool header = false;
  for (const auto& [key, p] : points) {
    const auto& [v, tp, b, ctx, k] = key;
    if (v != "mlra_4") continue;
    const auto mla = points.find({"mla", tp, b, ctx, k});
    if (mla == points.end()) continue;
    if (!header) {
      fmt::print(
          "\nMLRA-4 over MLA, one rank's share: measured = MLA ms / MLRA-4 ms, bytes = MLA "
          "roofline / MLRA-4 roofline, fraction = measured / bytes\n");
      fmt::print("{:>3} {:>3} {:>6} {:>6} {:>9} {:>9} {:>9}\n", "k", "tp", "batch", "ctx",
                 "measured", "bytes", "fraction");
      header = true;
    }
    const double measured = mla->second.best_ms / p.best_ms;
    const double bytes = mla->second.roof_ms / p.roof_ms;
    fmt::print("{:>3} {:>3} {:>6} {:>6} {:>9.2f} {:>9.2f} {:>8.0f}%\n", k, tp, b, ctx, measured,
               bytes, 100.0 * measured / bytes);
  }
}

int run_decode(const DecodeArgs& a) {
  std::vector<KernelOptions> option_sets;
  for (const auto& k : a.kernels.empty() ? std::vector<std::string>{""} : a.kernels)
    option_sets.push_back(bench::kernels_of(k));
  for (size_t k = 0; k < option_sets.size(); ++k)
    fmt::print("kernel options k{}: {}\n", k, bench::kernels_line(option_sets[k]));
  // The FP8 cache's run, k = fp8_k, where some context reaches --fp8-min-context.
  const size_t fp8_k = option_sets.size();
  const bool fp8_run = a.fp8_min_context > 0 &&
                       *std::max_element(a.contexts.begin(), a.contexts.end()) >= a.fp8_min_context;
  const size_t runs = option_sets.size() + (fp8_run ? 1 : 0);
  if (fp8_run)
    fmt::print("k{}: options k0 with the FP8 cache (kv_cache_dtype fp8_e4m3), contexts >= {}\n",
               fp8_k, a.fp8_min_context);
  const double bw = bench::copy_bandwidth_gbs(nullptr);
  fmt::print("device-to-device copy bandwidth: {:.0f} GB/s\n", bw);
  fmt::print("{} GPU(s) visible; all-reduce measured where the TP degree fits\n", visible_gpus());
  fmt::print(
      "{:<7} {:>3} {:>6} {:>6} {:>2} {:>9} {:>9} {:>7} {:>9} {:>8} {:>9} {:>7} {:>8} {:>7} "
      "{:>7} {:>7} {:>7}\n",
      "variant", "tp", "batch", "ctx", "k", "eager_ms", "graph_ms", "speedup", "tok/s", "ar_us",
      "roof_ms", "x_roof", "cacheGB", "dev_ms", "mm_ms", "attn_ms", "rest_ms");
  std::map<PointKey, Point> points;
  for (const auto& v : a.variants) {
    // "mla+tpla": the MLA checkpoint served with its latent split across ranks (Hadamard).
    const bool tpla = v.ends_with("+tpla");
    const std::string dir = tpla ? v.substr(0, v.size() - 5) : v;
    ModelConfig c = load_model_config(std::filesystem::path(a.config_dir) / dir / "config.json",
                                      *parse_variant(dir));
    if (tpla) {
      c.mla_tp_mode = LatentTpMode::kTpla;
      c.tpla_options.transform = "hadamard";
      c.tpla_options.pd_separation = true;
    }
    auto ckpt = make_synthetic_checkpoint(c, 1234);
    for (int tp : a.tps) {
      if (!unsupported_tp_reason(c, tp).empty()) continue;
      const ShardPlan plan = make_shard_plan(c, tp, 0);
      int64_t max_tokens = 0;
      for (int b : a.batches)
        for (int ctx : a.contexts) max_tokens = std::max<int64_t>(max_tokens, int64_t(b) * ctx);
      const int32_t ps = 64;
      for (size_t k = 0; k < runs; ++k) {
        const bool fp8 = k == fp8_k;
        const CacheEncoding enc = fp8 ? CacheEncoding::kFp8E4M3 : CacheEncoding::kPlain;
        const int64_t bytes_per_token = cache_row_bytes(c, plan, enc, 2) * c.n_layer;
        const int64_t run_tokens =
            std::min<int64_t>(max_tokens, a.max_cache_gb * (1LL << 30) / bytes_per_token);
        auto backend = make_cuda_backend(0, option_sets[fp8 ? 0 : k]);
        auto comm = make_single_rank_communicator();
        Transformer model(c, plan, *ckpt, *backend, *comm, {ps, run_tokens / ps, enc});
        for (int b : a.batches)
          for (int ctx : a.contexts) {
            if (fp8 && ctx < a.fp8_min_context) continue;
            const int64_t pages_per_seq = (ctx + ps - 1) / ps;
            if (int64_t(b) * pages_per_seq > run_tokens / ps) continue;
            StepBatch s;
            s.page_indptr.push_back(0);
            for (int i = 0; i < b; ++i) {
              for (int64_t p = 0; p < pages_per_seq; ++p)
                s.page_indices.push_back(int32_t(i * pages_per_seq + p));
              s.page_indptr.push_back(int32_t(s.page_indices.size()));
              s.tokens.push_back(1000 + i);
              s.positions.push_back(ctx - 1);
              s.token_seq.push_back(i);
              s.slots.push_back(
                  int32_t((i * pages_per_seq + (ctx - 1) / ps) * ps + (ctx - 1) % ps));
              s.logit_rows.push_back(i);
            }
            SamplingBatch greedy;
            for (int i = 0; i < b; ++i) greedy.rows.push_back({.temperature = 0.0f});
            greedy.penalty_indptr.assign(size_t(b) + 1, 0);
            auto sampler = make_token_sampler(*backend, c.text_vocab_size);
            SampledTokens ids;
            std::vector<float> logits;
            auto step = [&] {
              if (a.full_logits)
                model.forward(s, logits);
              else
                model.forward(s, [&](const MatView& l) { sampler->sample(l, greedy, ids); });
            };
            auto time_steps = [&](int graph_batch) {
              model.enable_decode_graphs(graph_batch);
              for (int w = 0; w < 3; ++w) step();  // also records the graph
              std::vector<double> ms;
              for (int it = 0; it < a.iters; ++it) {
                const auto t0 = std::chrono::steady_clock::now();
                step();
                ms.push_back(
                    std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                        .count());
              }
              std::sort(ms.begin(), ms.end());
              return ms[ms.size() / 2];
            };
            const double eager = time_steps(0);
            const bool graphs = a.graph_max_batch >= b;
            const double graph = graphs ? time_steps(a.graph_max_batch) : eager;
            // Where an eager step's device time goes (gated: no host launch gaps).
            model.enable_decode_graphs(0);
            const DeviceTimes dev =
                gated_device_times(*backend, [&] { model.forward(s, [](const MatView&) {}); });
            const double cache_bytes = double(b) * ctx * double(bytes_per_token);
            const double ar_us = tp > 1 ? allreduce_median_us(tp, int64_t(b) * c.n_embd * 2) : 0.0;
            const double roof = (double(model.weight_bytes()) + cache_bytes) / (bw * 1e9) * 1e3 +
                                (ar_us > 0 ? 2.0 * double(c.n_layer) * ar_us * 1e-3 : 0.0);
            const double best = std::min(eager, graph);
            points[{v, tp, b, ctx, k}] = {best, roof};
            fmt::print(
                "{:<7} {:>3} {:>6} {:>6} {:>2} {:>9.3f} {:>9} {:>7} {:>9.0f} {:>8} {:>9.3f} "
                "{:>7.2f} {:>8.2f} {:>7} {:>7.3f} {:>7.3f} {:>7.3f}\n",
                v, tp, b, ctx, k, eager, graphs ? fmt::format("{:.3f}", graph) : "-",
                graphs ? fmt::format("{:.2f}", eager / graph) : "-", b / best * 1e3,
                tp == 1     ? "0"
                : ar_us > 0 ? fmt::format("{:.1f}", ar_us)
                            : "n/a",
                roof, best / roof, cache_bytes / 1e9,
                fmt::format("{:.3f}{}", dev.total_ms, dev.gated ? "" : "*"), dev.matmul_ms,
                dev.attention_ms, dev.total_ms - dev.matmul_ms - dev.attention_ms);
            std::fflush(stdout);
          }
      }
    }
  }
  fmt::print(
      "dev_ms with *: the launch queue filled before the step was enqueued (host gaps "
      "included)\n");
  print_comparisons(points, runs);
  return 0;
}
#else
int run_decode(const DecodeArgs&) {
  return bench::built_without_cuda("decode");
}
#endif

}  // namespace

void register_bench_decode(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<DecodeArgs>();
  CLI::App* cmd =
      app.add_subcommand("decode", "2.9B decode step time per TP rank share vs roofline");
  cmd->add_option("--variants", args->variants,
                  "variants (configs/2.9b/<v>; mla+tpla: MLA served as TPLA)");
  cmd->add_option("--tp", args->tps, "TP degrees (rank 0's share is timed)");
  cmd->add_option("--batch", args->batches, "batch sizes");
  cmd->add_option("--context", args->contexts, "context lengths");
  cmd->add_option("--iters", args->iters, "timed steps per point");
  cmd->add_option("--graph-max-batch", args->graph_max_batch,
                  "CUDA graphs up to this batch (0: eager only)");
  cmd->add_option("--max-cache-gb", args->max_cache_gb, "cache memory cap");
  cmd->add_flag("--full-logits", args->full_logits,
                "download every row's f32 logits instead of sampling greedily on the device");
  cmd->add_option("--config-dir", args->config_dir, "folder of 2.9B configs");
  cmd->add_option("--fp8-min-context", args->fp8_min_context,
                  "also run the FP8 cache (kv_cache_dtype fp8_e4m3) at this context and longer, "
                  "as the last k (0: never)");
  cmd->add_option("--kernels", args->kernels,
                  "kernel options as the server config's \"kernels\" object; several: each point "
                  "runs under each, compared in one table (default: {})");
  bench::on_run(cmd, exit_code, [args] { return run_decode(*args); });
}

}  // namespace mlra
