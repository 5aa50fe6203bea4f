// Prefill benchmark: one sequence of `tokens` prompt tokens through the rank-0 Transformer of a
// TP plan on the CUDA backend, in chunks of `chunk` tokens (each chunk attends to the cached
// prefix and itself), timed end to end (host preparation, uploads, all layers, the last logits).
// A second pass with backend op timing gives the device time of matrix products and attention.
// Useful FLOPs: products 2 x (rank's weight elements without the embedding) per token plus the
// lm_head once per chunk; attention 2 x (q.k + p.v dims) x heads per causal (query, key) pair,
// as the kernel computes it (absorbed form for the latent family). --kernels sets the kernel
// options.
#include "server/bench/bench_prefill.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "kernels/backend.h"
#include "kernels/communicator.h"
#include "models/latent_expansion.h"
#include "models/model_config.h"
#include "models/shard_plan.h"
#include "models/synthetic_checkpoint.h"
#include "models/transformer.h"
#include "server/bench/bench_command.h"

namespace mlra {
namespace {

struct PrefillArgs {
  std::vector<std::string> variants{"mlra_4", "mla", "gla_2", "gqa"};
  std::vector<int> tps{1};
  std::vector<int> tokens{2048, 8192, 32768};
  int chunk = 0;  // 0: the whole prompt in one step
  int iters = 3;
  std::vector<std::string> latent_prefill{"auto"};  // MLA / GLA prefill forms to time
  std::string config_dir = std::string(MLRA_SOURCE_DIR) + "/configs/2.9b";
  std::string kernels;  // --kernels: the "kernels" config object
};

#ifdef MLRA_HAVE_CUDA

// FLOPs per causal (query, key) pair per layer on this rank.
double attention_flops_per_pair(const ModelConfig& c, const ShardPlan& plan, bool expanded) {
  if (expanded)  // q.k (d_n + d_r), p.v (d_n) per head
    return 2.0 * double(plan.heads.size()) * double(2 * c.qk_nope_head_dim + c.qk_rope_head_dim);
  if (c.variant.is_latent()) {
    double f = 0.0;
    for (const LatentUnit& u : plan.units)
      f += 2.0 * u.num_heads() *
           double(2 * plan.latent_width + c.qk_rope_head_dim);  // q.k (d_c + d_r), p.v (d_c)
    return f;
  }
  return 2.0 * double(plan.heads.size()) * 2.0 * double(c.head_dim);
}

int run_prefill(const PrefillArgs& a) {
  const KernelOptions kernels = bench::kernels_of(a.kernels);
  fmt::print("kernel options: {}\n", bench::kernels_line(kernels));
  fmt::print("{:<7} {:<8} {:>3} {:>6} {:>6} {:>9} {:>8} {:>7} {:>7} {:>7} {:>8} {:>8} {:>8}\n",
             "variant", "form", "tp", "tokens", "chunk", "total_ms", "tok/s", "attn%", "mm%",
             "other%", "attnTF/s", "mmTF/s", "attnF%");
  for (const auto& v : a.variants)
    for (const auto& form : a.latent_prefill) {
      ModelConfig c = load_model_config(std::filesystem::path(a.config_dir) / v / "config.json",
                                        *parse_variant(v));
      const auto mode = parse_latent_prefill(form);
      if (!mode) {
        fmt::print(stderr,
                   "mlra-bench prefill: --latent-prefill must be auto, absorbed or expanded\n");
        return 2;
      }
      // The form only matters for MLA / GLA: other variants run once, under the first form.
      if (!latent_expansion_supported(c) && form != a.latent_prefill.front()) continue;
      c.latent_prefill.mode = *mode;
      c.latent_prefill.scratch_bytes = int64_t(8) << 30;  // the whole prompt, as one step
      auto ckpt = make_synthetic_checkpoint(c, 1234);
      for (int tp : a.tps) {
        if (!unsupported_tp_reason(c, tp).empty()) continue;
        const ShardPlan plan = make_shard_plan(c, tp, 0);
        const int max_tokens = *std::max_element(a.tokens.begin(), a.tokens.end());
        const int32_t ps = 64;
        auto backend = make_cuda_backend(0, kernels);
        auto comm = make_single_rank_communicator();
        Transformer model(c, plan, *ckpt, *backend, *comm, {ps, (max_tokens + ps - 1) / ps + 1});
        const double embed_elems = double(c.vocab_size) * double(c.n_embd);
        const double body_elems = double(model.weight_bytes()) / 2.0 - embed_elems;
        for (int n : a.tokens) {
          const int chunk = a.chunk > 0 ? std::min(a.chunk, n) : n;
          std::vector<StepBatch> steps;
          for (int begin = 0; begin < n; begin += chunk) {
            const int end = std::min(n, begin + chunk);
            StepBatch s;
            s.page_indptr = {0};
            for (int p = 0; p < (end + ps - 1) / ps; ++p) s.page_indices.push_back(p);
            s.page_indptr.push_back(int32_t(s.page_indices.size()));
            for (int t = begin; t < end; ++t) {
              s.tokens.push_back(1000 + t % 30000);
              s.positions.push_back(t);
              s.token_seq.push_back(0);
              s.slots.push_back(t);
            }
            s.logit_rows = {end - begin - 1};
            steps.push_back(std::move(s));
          }
          std::vector<float> logits;
          auto prefill = [&] {
            for (const StepBatch& s : steps) model.forward(s, logits);
          };
          prefill();  // warm-up (workspace growth, cuBLAS heuristics)
          std::vector<double> ms;
          for (int it = 0; it < a.iters; ++it) {
            const auto t0 = std::chrono::steady_clock::now();
            prefill();
            ms.push_back(
                std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                    .count());
          }
          std::sort(ms.begin(), ms.end());
          const double total = ms[ms.size() / 2];
          backend->set_op_timing(true);
          prefill();
          const Backend::OpTimes op = backend->take_op_times();
          backend->set_op_timing(false);
          // Attention FLOPs per step in the form the step ran (latent_expansion.h decides), and the
          // expanded form's up-projections (matrix products: K_nope and V of every cached
          // position).
          double attn_flops = 0.0, up_flops = 0.0;
          for (const StepBatch& s : steps) {
            const LatentExpansion e = plan_latent_expansion(c, tp, s, ps);
            double pairs = 0.0;
            for (int32_t p : s.positions) pairs += double(p) + 1.0;
            attn_flops += pairs * attention_flops_per_pair(c, plan, e.active()) * double(c.n_layer);
            up_flops += double(e.scratch_rows) * 4.0 * double(c.latent_dim()) *
                        double(c.qk_nope_head_dim) * double(plan.heads.size()) * double(c.n_layer);
          }
          const double mm_flops =
              2.0 * body_elems * n + 2.0 * embed_elems * double(steps.size()) + up_flops;
          const double other = std::max(0.0, total - op.attention_ms - op.matmul_ms);
          fmt::print(
              "{:<7} {:<8} {:>3} {:>6} {:>6} {:>9.1f} {:>8.0f} {:>7.1f} {:>7.1f} {:>7.1f} {:>8.0f} "
              "{:>8.0f} {:>8.1f}\n",
              v, latent_expansion_supported(c) ? form : "-", tp, n, chunk, total, n / total * 1e3,
              100.0 * op.attention_ms / total, 100.0 * op.matmul_ms / total, 100.0 * other / total,
              attn_flops / (op.attention_ms * 1e-3) / 1e12, mm_flops / (op.matmul_ms * 1e-3) / 1e12,
              100.0 * attn_flops / (attn_flops + mm_flops));
          std::fflush(stdout);
        }
      }
    }
  fmt::print(
      "attn%/mm%/other%: share of the end-to-end time (op timing pass); attnF%: attention's "
      "share of the useful FLOPs\n");
  return 0;
}
#else
int run_prefill(const PrefillArgs&) {
  return bench::built_without_cuda("prefill");
}
#endif

}  // namespace

void register_bench_prefill(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<PrefillArgs>();
  CLI::App* cmd = app.add_subcommand(
      "prefill", "2.9B prefill time per TP rank share: attention vs matrix products");
  cmd->add_option("--variants", args->variants, "variants (configs/2.9b/<v>)");
  cmd->add_option("--tp", args->tps, "TP degrees (rank 0's share is timed)");
  cmd->add_option("--tokens", args->tokens, "prompt lengths");
  cmd->add_option("--chunk", args->chunk, "tokens per prefill step (0: whole prompt)");
  cmd->add_option("--iters", args->iters, "timed prefills per point (median)");
  cmd->add_option("--latent-prefill", args->latent_prefill,
                  "MLA / GLA prefill forms, each timed: auto, absorbed, expanded");
  cmd->add_option("--config-dir", args->config_dir, "folder of 2.9B configs");
  bench::add_kernels_option(cmd, args->kernels);
  bench::on_run(cmd, exit_code, [args] { return run_prefill(*args); });
}

}  // namespace mlra
