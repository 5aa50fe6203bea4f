// Every variant's full forward on the CUDA backend (bf16 weights and activations, fp32
// residual) against the CPU reference on the tiny checkpoints: logits within bf16 tolerance
// and the same greedy continuation for the first tokens. Label gpu: runs on the device machine.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <random>

#include "../step_builder.h"
#include "engine/local_runner.h"
#include "kernels/communicator.h"
#include "models/checkpoint.h"
#include "models/model_config.h"
#include "models/shard_plan.h"
#include "models/synthetic_checkpoint.h"
#include "models/transformer.h"

using namespace mlra;
using mlra::testing::build_step;
using mlra::testing::rel_l2;

namespace {

std::unique_ptr<ModelRunner> tiny_runner(const std::string& v, const std::string& backend) {
  RunnerConfig o;
  o.model_dir = std::filesystem::path(MLRA_TEST_DATA) / "tiny" / v;
  o.variant = v;
  o.backend = backend;
  o.page_size = 16;
  o.num_pages = 64;
  o.cuda_graph_max_batch = 0;  // eager; decode graphs have their own tests (test_decode_graphs)
  return make_local_runner(o);
}

int32_t argmax(const std::vector<float>& row, int64_t offset, int64_t n) {
  return int32_t(std::max_element(row.begin() + offset, row.begin() + offset + n) -
                 (row.begin() + offset));
}

}  // namespace

TEST_CASE("CUDA forward matches the CPU reference for every variant", "[gpu][model]") {
  const char* variants[] = {"mha",          "gqa",           "mqa",           "gta",
                            "mfa",          "tpa",           "mla",           "gla2",
                            "gla4",         "mlra2",         "mlra4",         "gqa_gated",
                            "mla_gated",    "gla2_gated",    "mlra2_gated",   "mlra4_gated",
                            "mla_no_scale", "gla2_no_scale", "mlra2_no_scale"};
  std::mt19937 rng(17);
  for (const char* v : variants) {
    INFO(v);
    auto cpu = tiny_runner(v, "cpu");
    auto gpu = tiny_runner(v, "cuda");
    const int64_t V = cpu->config().vocab_size;
    std::vector<int32_t> prompt(37);
    for (auto& t : prompt) t = int32_t(rng() % uint32_t(V));
    std::vector<float> lc, lg;
    cpu->execute(build_step({{0, 0, prompt, true}}, 16, 16), lc);
    gpu->execute(build_step({{0, 0, prompt, true}}, 16, 16), lg);
    const double err = rel_l2(lg, lc);
    CAPTURE(err);
    CHECK(err < 2e-2);
    // Greedy: both sides decode the CPU's tokens; the GPU must pick the CPU's argmax wherever the
    // CPU's top-2 margin exceeds bf16 noise (random tiny models have near ties).
    int compared = 0;
    for (int32_t k = 0; k < 8; ++k) {
      const int64_t row = k == 0 ? int64_t(prompt.size() - 1) * V : 0;
      std::vector<float> top(lc.begin() + row, lc.begin() + row + V);
      std::partial_sort(top.begin(), top.begin() + 2, top.end(), std::greater<float>());
      const int32_t next = argmax(lc, row, V);
      if (top[0] - top[1] > 0.1f) {
        CHECK(argmax(lg, row, V) == next);
        ++compared;
      }
      const int32_t pos = int32_t(prompt.size()) + k;
      cpu->execute(build_step({{0, pos, {next}, false}}, 16, 16), lc);
      gpu->execute(build_step({{0, pos, {next}, false}}, 16, 16), lg);
      CHECK(rel_l2(lg, lc) < 2e-2);
    }
    CAPTURE(compared);
    CHECK(compared >= 1);
  }
}

// The shapes a TP rank sees (fewer heads, one latent of MLRA-4 at TP4, TPLA slices of MLA) on the
// GPU's fused paths, one GPU: rank 0 of each plan with a single-rank communicator, CUDA against
// CPU on the same tiny checkpoint (its logits come from rank 0's partial sums: a deterministic
// function of the weights, the same on both backends). Also decode steps through the graphs.
TEST_CASE("CUDA rank-0 shards of TP plans match the CPU shards", "[gpu][model][tp]") {
  struct Case {
    const char* variant;
    int tp;
    bool tpla;
  };
  const Case cases[] = {{"mlra4", 2, false}, {"mlra4", 4, false},      {"mlra2", 2, false},
                        {"gla2", 2, false},  {"mla", 2, false},        {"mla", 2, true},
                        {"gqa", 2, false},   {"mlra4_gated", 4, false}};
  std::mt19937 rng(29);
  for (const Case& k : cases) {
    INFO(k.variant << " tp " << k.tp << (k.tpla ? " tpla" : ""));
    const auto dir = std::filesystem::path(MLRA_TEST_DATA) / "tiny" / k.variant;
    ModelConfig c = load_model_config(dir / "config.json", *parse_variant(k.variant));
    if (k.tpla) {
      c.mla_tp_mode = LatentTpMode::kTpla;
      c.tpla_options.transform = "hadamard";
    }
    REQUIRE(unsupported_tp_reason(c, k.tp).empty());
    const ShardPlan plan = make_shard_plan(c, k.tp, 0);
    auto ckpt = Checkpoint::open(dir);  // the tiny checkpoint the TP=1 test above uses
    auto cpu_b = make_cpu_backend();
    auto gpu_b = make_cuda_backend(0);
    auto comm_c = make_single_rank_communicator();
    auto comm_g = make_single_rank_communicator();
    Transformer cpu(c, plan, *ckpt, *cpu_b, *comm_c, {16, 64});
    Transformer gpu(c, plan, *ckpt, *gpu_b, *comm_g, {16, 64});
    gpu.enable_decode_graphs(8);
    std::vector<int32_t> prompt(29);
    for (auto& t : prompt) t = int32_t(rng() % uint32_t(c.vocab_size));
    std::vector<float> lc, lg;
    cpu.forward(
        build_step({{0, 0, prompt, false}, {1, 0, {prompt.begin(), prompt.begin() + 5}, false}}, 16,
                   16),
        lc);
    gpu.forward(
        build_step({{0, 0, prompt, false}, {1, 0, {prompt.begin(), prompt.begin() + 5}, false}}, 16,
                   16),
        lg);
    CHECK(rel_l2(lg, lc) < 2e-2);
    for (int32_t i = 0; i < 3; ++i) {  // decode steps (graph replays after the first)
      const auto step = build_step(
          {{0, 29 + i, {prompt[size_t(i)]}, false}, {1, 5 + i, {prompt[size_t(i + 1)]}, false}}, 16,
          16);
      cpu.forward(step, lc);
      gpu.forward(step, lg);
      CHECK(rel_l2(lg, lc) < 2e-2);
    }
  }
}

// The expanded form of MLA / GLA prefill at the release's head shapes (d_n 128, d_r 64, so the
// prefill kernel's expanded layout runs): a small synthetic model, GPU expanded against GPU
// absorbed and the CPU reference, over fresh prefills, a chunk over cached context next to a
// decode and a fresh prefill, then decodes.
TEST_CASE("CUDA expanded latent prefill matches the absorbed form and the CPU reference",
          "[gpu][model][latent_prefill]") {
  for (const char* v : {"mla", "gla_2"}) {
    INFO(v);
    ModelConfig c = load_model_config(
        std::filesystem::path(MLRA_SOURCE_DIR) / "configs/2.9b" / v / "config.json",
        *parse_variant(v));
    c.n_layer = 2;
    c.n_head = 8;
    c.n_embd = 1024;  // n_head * d_n (c_proj's shape)
    c.q_lora_rank = 256;
    c.intermediate_size = 512;
    c.vocab_size = 512;
    c.text_vocab_size = 512;
    c.eot_token = 511;
    c.validate();
    auto ckpt = make_synthetic_checkpoint(c, 99);
    const ShardPlan plan = make_shard_plan(c, 1, 0);
    auto model = [&](Backend& b, Communicator& comm, LatentPrefill mode) {
      ModelConfig m = c;
      m.latent_prefill.mode = mode;
      return std::make_unique<Transformer>(m, plan, *ckpt, b, comm, CacheOptions{16, 128});
    };
    auto cpu_b = make_cpu_backend();
    auto gpu_b = make_cuda_backend(0), gpu_b2 = make_cuda_backend(0);
    auto comm_c = make_single_rank_communicator(), comm_g = make_single_rank_communicator(),
         comm_g2 = make_single_rank_communicator();
    auto cpu = model(*cpu_b, *comm_c, LatentPrefill::kAbsorbed);
    auto gpu_ex = model(*gpu_b, *comm_g, LatentPrefill::kExpanded);
    auto gpu_ab = model(*gpu_b2, *comm_g2, LatentPrefill::kAbsorbed);
    std::mt19937 rng(41);
    auto toks = [&](int n) {
      std::vector<int32_t> t(static_cast<size_t>(n));
      for (auto& x : t) x = int32_t(rng() % 500);
      return t;
    };
    const std::vector<StepBatch> steps = {
        build_step({{0, 0, toks(300), true}, {1, 0, toks(200), true}}, 16, 32),
        build_step({{0, 300, toks(1)}, {1, 200, toks(150), true}, {2, 0, toks(130), true}}, 16, 32),
        build_step({{0, 301, toks(1)}, {1, 350, toks(1)}, {2, 130, toks(1)}}, 16, 32),
    };
    for (size_t i = 0; i < steps.size(); ++i) {
      INFO("step " << i);
      std::vector<float> lc, le, la;
      cpu->forward(steps[i], lc);
      gpu_ex->forward(steps[i], le);
      gpu_ab->forward(steps[i], la);
      // This random model's bf16 error (absorbed GPU vs CPU) is ~2e-2 (measured 2.2e-2 for
      // GLA-2): the expanded form must be as accurate as that, not bit-equal to it.
      const double ex = rel_l2(le, lc), ab = rel_l2(la, lc), pair = rel_l2(le, la);
      std::printf(
          "expanded prefill %s step %zu: rel_l2 expanded/cpu %.4g absorbed/cpu %.4g "
          "expanded/absorbed %.4g\n",
          v, i, ex, ab, pair);
      CHECK(ab < 5e-2);
      CHECK(ex < 1.25 * ab + 2e-3);
      CHECK(pair < 5e-2);
    }
  }
}
