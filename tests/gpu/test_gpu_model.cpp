// Every variant's full forward on the CUDA backend (bf16 weights and activations, fp32
// residual) against the CPU reference on the tiny checkpoints: logits within bf16 tolerance
// and the same greedy continuation for the first tokens. Label gpu: runs on the device machine.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <random>

#include "../step_builder.h"
#include "engine/local_runner.h"
#include "gpu_decode_fixture.h"
#include "gpu_test_util.h"

using namespace mlra;
using namespace mlra::gputest;
using mlra::testing::build_step;

namespace {

// Eager: decode graphs have their own tests (test_decode_graphs).
std::unique_ptr<ModelRunner> tiny_runner(const std::string& v, const std::string& backend) {
  return make_local_runner(tiny_runner_config(v, backend, 0));
}

int32_t argmax(const std::vector<float>& row, int64_t offset, int64_t n) {
  return int32_t(std::max_element(row.begin() + offset, row.begin() + offset + n) -
                 (row.begin() + offset));
}

}  // namespace

TEST_CASE("CUDA forward matches the CPU reference for every variant", "[gpu][model]") {
  std::mt19937 rng(17);
  for (const char* v : kTinyVariants) {
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
    TinyModel m = tiny_model(k.variant);  // the tiny checkpoint the TP=1 test above uses
    ModelConfig& c = m.config;
    if (k.tpla) {
      c.mla_tp_mode = LatentTpMode::kTpla;
      c.tpla_options.transform = "hadamard";
    }
    REQUIRE(unsupported_tp_reason(c, k.tp).empty());
    const ShardPlan plan = make_shard_plan(c, k.tp, 0);
    DecodeModel cpu = cpu_model(c, plan, *m.ckpt, {16, 64});
    DecodeModel gpu = cuda_model(c, plan, *m.ckpt, {16, 64}, {}, 8);
    std::vector<int32_t> prompt(29);
    for (auto& t : prompt) t = int32_t(rng() % uint32_t(c.vocab_size));
    forward_all({&cpu, &gpu}, build_step({{0, 0, prompt, false},
                                          {1, 0, {prompt.begin(), prompt.begin() + 5}, false}},
                                         16, 16));
    CHECK(rel_l2(gpu.logits, cpu.logits) < kTinyDecodeBound);
    for (int32_t i = 0; i < 3; ++i) {  // decode steps (graph replays after the first)
      forward_all({&cpu, &gpu}, build_step({{0, 29 + i, {prompt[size_t(i)]}, false},
                                            {1, 5 + i, {prompt[size_t(i + 1)]}, false}},
                                           16, 16));
      CHECK(rel_l2(gpu.logits, cpu.logits) < kTinyDecodeBound);
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
    const ModelConfig c = release_head_config(v, 512);
    auto ckpt = make_synthetic_checkpoint(c, 99);
    const ShardPlan plan = make_shard_plan(c, 1, 0);
    auto prefill = [&](LatentPrefill mode) {
      ModelConfig m = c;
      m.latent_prefill.mode = mode;
      return m;
    };
    DecodeModel cpu = cpu_model(prefill(LatentPrefill::kAbsorbed), plan, *ckpt, {16, 128});
    DecodeModel gpu_ex = cuda_model(prefill(LatentPrefill::kExpanded), plan, *ckpt, {16, 128});
    DecodeModel gpu_ab = cuda_model(prefill(LatentPrefill::kAbsorbed), plan, *ckpt, {16, 128});
    const std::vector<StepBatch> steps = prefill_then_decode_steps(41, 1);
    for (size_t i = 0; i < steps.size(); ++i) {
      INFO("step " << i);
      forward_all({&cpu, &gpu_ex, &gpu_ab}, steps[i]);
      const std::vector<float>&lc = cpu.logits, &le = gpu_ex.logits, &la = gpu_ab.logits;
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
