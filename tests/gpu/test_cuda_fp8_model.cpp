// Whole forwards over an FP8 cache at the release's head shapes, so the tensor-core kernels that
// read FP8 run inside the model (MLRA-4: four 128-wide latents, the latent-128 decode and prefill
// kernels; GLA-2 and MLA: 256- and 512-wide latents, the wide kernel, absorbed prefill as packed
// rows and expanded prefill over gathered latents; GQA: the K/V decode and prefill kernels): small
// synthetic models (two layers, 8 heads), the CUDA backend's logits against the CPU backend's
// with the same FP8 cache, over prefills, a chunk over cached context beside a decode and a fresh
// prefill, then decodes replayed from CUDA graphs.
#include <catch2/catch.hpp>

#include <cstdio>
#include <random>
#include <string>

#include "fp8_cross_backend_bound.h"
#include "gpu_decode_fixture.h"
#include "gpu_test_util.h"

using namespace mlra;
using namespace mlra::gputest;

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
    ModelConfig c = release_head_config(v, 512);
    c.latent_prefill.mode = k.prefill;
    c.validate();
    auto ckpt = make_synthetic_checkpoint(c, 7);
    const ShardPlan plan = make_shard_plan(c, 1, 0);
    const CacheOptions fp8_cache{16, 128, CacheEncoding::kFp8E4M3}, plain_cache{16, 128};
    DecodeModel cpu = cpu_model(c, plan, *ckpt, fp8_cache);
    DecodeModel gpu = cuda_model(c, plan, *ckpt, fp8_cache, {}, 4);
    // The bf16 cache on the GPU: this random model's own bf16 error against the CPU's float32
    // cache sets the scale of what the FP8 comparison may show.
    DecodeModel cpu_plain = cpu_model(c, plan, *ckpt, plain_cache);
    DecodeModel gpu_plain = cuda_model(c, plan, *ckpt, plain_cache);
    const std::vector<StepBatch> steps = prefill_then_decode_steps(43, 2);
    for (size_t i = 0; i < steps.size(); ++i) {
      INFO("step " << i);
      forward_all({&cpu, &gpu, &cpu_plain, &gpu_plain}, steps[i]);
      const std::vector<float>&lc = cpu.logits, &lg = gpu.logits;
      const std::vector<float>&pc = cpu_plain.logits, &pg = gpu_plain.logits;
      const double fp8 = rel_l2(lg, lc), bf16 = rel_l2(pg, pc), quant = rel_l2(lc, pc);
      std::printf(
          "fp8 cache %s step %zu: rel_l2 cuda/cpu %.4g (bf16 cache: %.4g; fp8 against bf16 cache "
          "on the CPU: %.4g)\n",
          v.c_str(), i, fp8, bf16, quant);
      CHECK(fp8 < fp8_cross_backend_bound(bf16, quant));
    }
    CHECK(gpu.model->recorded_graphs() > 0);
  }
}
