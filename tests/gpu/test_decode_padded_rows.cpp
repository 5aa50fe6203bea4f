// Decode steps of 1..8 sequences of a model whose per-rank MLP intermediate size is not a
// multiple of 8 (the release's 9880 / 4 = 2470 kind): the down-projection's rows are padded
// (models/weight_loader.h padded_ld) and its product runs on our GEMV's K tail under the kernel
// option gemv_k_tail 1, on cuBLAS over the padded pitch (ld > K) under 0 (the default). Rank-0
// shards at TP 1, 2 and 4 on the CUDA backend under both values against the CPU reference, and
// against the same model stored unpadded (row_align 1, defaults: that product goes to cuBLAS),
// eager and from decode graphs.
#include <catch2/catch.hpp>

#include "gpu_decode_fixture.h"
#include "gpu_test_util.h"

using namespace mlra;
using namespace mlra::gputest;

TEST_CASE("decode over padded MLP rows (K % 8 != 0) matches the CPU and the unpadded model",
          "[gpu][model][small_batch][tail]") {
  for (const char* v : {"mlra_4", "mla"}) {
    const ModelConfig c = release_head_config(v, 1236);  // per rank 1236, 618, 309 at TP 1, 2, 4
    auto ckpt = make_synthetic_checkpoint(c, 91);
    for (const int tp : {1, 2, 4}) {
      INFO(v << " tp " << tp);
      REQUIRE(unsupported_tp_reason(c, tp).empty());
      const ShardPlan plan = make_shard_plan(c, tp, 0);
      DecodeSequences seqs({8, 5, 3, 7, false}, c.vocab_size);
      const CacheOptions cache = seqs.cache();
      DecodeModel cpu = cpu_model(c, plan, *ckpt, cache);
      // Index: gemv_k_tail.
      DecodeModel padded[2], graphed[2];
      for (int t = 0; t <= 1; ++t) {
        const KernelOptions o = with_option(&KernelOptions::gemv_k_tail, t);
        padded[t] = cuda_model(c, plan, *ckpt, cache, o);
        graphed[t] = cuda_model(c, plan, *ckpt, cache, o, 8);
      }
      DecodeModel plain = cuda_model(c, plan, *ckpt, cache, {}, 0, 1);
      forward_all({&cpu, &padded[0], &graphed[0], &padded[1], &graphed[1], &plain}, seqs.prefill());
      for (int batch = 1; batch <= 8; ++batch) {
        const StepBatch step = seqs.decode_strided(batch, 5);
        const std::vector<float>& lc = cpu.forward(step);
        const std::vector<float>& lu = plain.forward(step);
        INFO("batch " << batch);
        CHECK(rel_l2(lu, lc) < kReleaseDecodeBound);
        for (int t = 0; t <= 1; ++t) {
          INFO("gemv_k_tail " << t);
          // bf16 activations and cache against the CPU's f32 (the release-head-shape bound); the
          // unpadded model differs from the padded one only in the down-projection's kernel or
          // pitch (f32 sums in another order, then the same rounding).
          const std::vector<float>& lp = padded[t].forward(step);
          const std::vector<float>& lg = graphed[t].forward(step);
          CHECK(rel_l2(lp, lc) < kReleaseDecodeBound);
          CHECK(rel_l2(lg, lc) < kReleaseDecodeBound);
          CHECK(rel_l2(lp, lu) < kDeviceDecodeBound);
        }
      }
    }
  }
}
