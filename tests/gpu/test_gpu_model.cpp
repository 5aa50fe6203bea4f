// Every variant's full forward on the CUDA backend (bf16 weights and activations, fp32
// residual) against the CPU reference on the tiny checkpoints: logits within bf16 tolerance
// and the same greedy continuation for the first tokens. Label gpu: runs on the device machine.
#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <random>

#include "../step_builder.h"
#include "kernels/communicator.h"
#include "models/checkpoint.h"
#include "models/local_runner.h"
#include "models/model_config.h"
#include "models/shard_plan.h"
#include "models/transformer.h"

using namespace mlra;
using mlra::testing::build_step;
using mlra::testing::rel_l2;

namespace {

std::unique_ptr<ModelRunner> tiny_runner(const std::string& v, const std::string& backend) {
  LocalRunnerOptions o;
  o.model_dir = std::filesystem::path(MLRA_TEST_DATA) / "tiny" / v;
  o.variant = v;
  o.backend = backend;
  o.page_size = 16;
  o.num_pages = 64;
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
