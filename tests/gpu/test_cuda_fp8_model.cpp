// Whole forwards over an FP8 cache at the release's head shapes, so the tensor-core kernels that
// read FP8 run inside the model (MLRA-4: four 128-wide latents, the latent-128 decode and prefill
// kernels; GLA-2 and MLA: 256- and 512-wide latents, the wide kernel, absorbed prefill as packed
// rows and expanded prefill over gathered latents; GQA: the K/V decode and prefill kernels): small
// synthetic models (two layers, 8 heads), the CUDA backend's logits against the CPU backend's
// with the same FP8 cache, over prefills, a chunk over cached context beside a decode and a fresh
// prefill, then decodes replayed from CUDA graphs.
#include <catch2/catch.hpp>

#include <cstdio>
#include <filesystem>
#include <random>

#include "../step_builder.h"
#include "fp8_cross_backend_bound.h"
#include "kernels/backend.h"
#include "kernels/communicator.h"
#include "models/model_config.h"
#include "models/shard_plan.h"
#include "models/synthetic_checkpoint.h"
#include "models/transformer.h"

using namespace mlra;
using mlra::gputest::fp8_cross_backend_bound;
using mlra::testing::build_step;
using mlra::testing::rel_l2;

TEST_CASE("CUDA forward over an fp8 cache at release head shapes matches the CPU's",
          "[gpu][fp8][model]") {
  struct Case {
    const char* dir;
    LatentPrefill prefill;
  };
  for (const Case k :
       {Case{"mlra_4", LatentPrefill::kAbsorbed}, Case{"gla_2", LatentPrefill::kAbsorbed},
        Case{"mla", LatentPrefill::kAbsorbed}, Case{"mla", LatentPrefill::kExpanded},
        Case{"gqa", LatentPrefill::kAbsorbed}}) {
    const std::string v = k.dir;
    INFO(v << (k.prefill == LatentPrefill::kExpanded ? " (expanded prefill)" : ""));
    ModelConfig c = load_model_config(
        std::filesystem::path(MLRA_SOURCE_DIR) / "configs/2.9b" / v / "config.json",
        *parse_variant(v));
    c.n_layer = 2;
    c.n_head = 8;
    c.n_embd = 1024;  // n_head * 128 (c_proj's shape)
    if (c.q_lora_rank > 0) c.q_lora_rank = 256;
    c.intermediate_size = 512;
    c.vocab_size = 512;
    c.text_vocab_size = 512;
    c.eot_token = 511;
    c.latent_prefill.mode = k.prefill;
    c.validate();
    auto ckpt = make_synthetic_checkpoint(c, 7);
    const ShardPlan plan = make_shard_plan(c, 1, 0);
    auto cpu_b = make_cpu_backend(), cpu_b2 = make_cpu_backend();
    auto gpu_b = make_cuda_backend(0), gpu_b2 = make_cuda_backend(0);
    auto comm_c = make_single_rank_communicator(), comm_c2 = make_single_rank_communicator(),
         comm_g = make_single_rank_communicator(), comm_g2 = make_single_rank_communicator();
    auto model = [&](Backend& b, Communicator& comm, CacheEncoding e) {
      return std::make_unique<Transformer>(c, plan, *ckpt, b, comm, CacheOptions{16, 128, e});
    };
    auto cpu = model(*cpu_b, *comm_c, CacheEncoding::kFp8E4M3);
    auto gpu = model(*gpu_b, *comm_g, CacheEncoding::kFp8E4M3);
    // The bf16 cache on the GPU: this random model's own bf16 error against the CPU's float32
    // cache sets the scale of what the FP8 comparison may show.
    auto cpu_plain = model(*cpu_b2, *comm_c2, CacheEncoding::kPlain);
    auto gpu_plain = model(*gpu_b2, *comm_g2, CacheEncoding::kPlain);
    gpu->enable_decode_graphs(4);
    std::mt19937 rng(43);
    auto toks = [&](int n) {
      std::vector<int32_t> t(static_cast<size_t>(n));
      for (auto& x : t) x = int32_t(rng() % 500);
      return t;
    };
    const std::vector<StepBatch> steps = {
        build_step({{0, 0, toks(300), true}, {1, 0, toks(200), true}}, 16, 32),
        build_step({{0, 300, toks(1)}, {1, 200, toks(150), true}, {2, 0, toks(130), true}}, 16, 32),
        build_step({{0, 301, toks(1)}, {1, 350, toks(1)}, {2, 130, toks(1)}}, 16, 32),
        build_step({{0, 302, toks(1)}, {1, 351, toks(1)}, {2, 131, toks(1)}}, 16, 32),
    };
    for (size_t i = 0; i < steps.size(); ++i) {
      INFO("step " << i);
      std::vector<float> lc, lg, pc, pg;
      cpu->forward(steps[i], lc);
      gpu->forward(steps[i], lg);
      cpu_plain->forward(steps[i], pc);
      gpu_plain->forward(steps[i], pg);
      const double fp8 = rel_l2(lg, lc), bf16 = rel_l2(pg, pc), quant = rel_l2(lc, pc);
      std::printf(
          "fp8 cache %s step %zu: rel_l2 cuda/cpu %.4g (bf16 cache: %.4g; fp8 against bf16 cache "
          "on the CPU: %.4g)\n",
          v.c_str(), i, fp8, bf16, quant);
      CHECK(fp8 < fp8_cross_backend_bound(bf16, quant));
    }
    CHECK(gpu->recorded_graphs() > 0);
  }
}
