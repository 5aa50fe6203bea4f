// Decode steps of 1..8 sequences with every small-M kernel on (gemv_max_rows 8: the tensor-core
// GEMV and its SwiGLU form, the fused latent projections up to 8 tokens) against the CPU
// reference: the tiny checkpoints of the latent and K/V families, rank-0 shards of TP plans, and
// a synthetic model at the release's head shapes (d_n 128, d_r 64, d_c 128 / 512), eager and
// replayed from decode graphs.
#include <catch2/catch.hpp>

#include <filesystem>
#include <random>

#include "../step_builder.h"
#include "kernels/backend.h"
#include "kernels/communicator.h"
#include "models/checkpoint.h"
#include "models/model_config.h"
#include "models/shard_plan.h"
#include "models/synthetic_checkpoint.h"
#include "models/transformer.h"

using namespace mlra;
using mlra::testing::build_step;
using mlra::testing::rel_l2;
using mlra::testing::SeqChunk;

namespace {

constexpr int32_t kPage = 16, kPagesPerSeq = 8, kSeqs = 8;

// Prefills kSeqs sequences, then runs decode steps of 1, 3, 8, 5, 2 and 8 sequences on the CPU
// and on two GPU models (eager; graphs up to 8), comparing each step's logits with the CPU's.
void check_decode(const ModelConfig& c, const Checkpoint& ckpt, int tp) {
  const ShardPlan plan = make_shard_plan(c, tp, 0);
  KernelOptions small;
  small.gemv_max_rows = KernelOptions::kMaxGemvRows;
  auto cpu_b = make_cpu_backend();
  auto gpu_b = make_cuda_backend(0, small), graph_b = make_cuda_backend(0, small);
  auto comm_c = make_single_rank_communicator(), comm_g = make_single_rank_communicator(),
       comm_r = make_single_rank_communicator();
  const CacheOptions cache{kPage, kSeqs * kPagesPerSeq};
  Transformer cpu(c, plan, ckpt, *cpu_b, *comm_c, cache);
  Transformer eager(c, plan, ckpt, *gpu_b, *comm_g, cache);
  Transformer graphed(c, plan, ckpt, *graph_b, *comm_r, cache);
  graphed.enable_decode_graphs(8);
  std::mt19937 rng(23);
  const auto V = uint32_t(c.vocab_size);
  std::vector<SeqChunk> prefill;
  std::vector<int32_t> length(kSeqs), next(kSeqs);
  for (int s = 0; s < kSeqs; ++s) {
    std::vector<int32_t> prompt(size_t(5 + 9 * s));
    for (auto& t : prompt) t = int32_t(rng() % V);
    prefill.push_back({s, 0, prompt, false});
    length[size_t(s)] = int32_t(prompt.size());
    next[size_t(s)] = int32_t(rng() % V);
  }
  std::vector<float> lc, le, lg;
  const StepBatch first = build_step(prefill, kPage, kPagesPerSeq);
  cpu.forward(first, lc);
  eager.forward(first, le);
  graphed.forward(first, lg);
  REQUIRE(rel_l2(le, lc) < 2e-2);
  for (const int batch : {1, 3, 8, 5, 2, 8}) {
    std::vector<SeqChunk> chunks;
    for (int i = 0; i < batch; ++i) {
      const int s = (i * 3 + batch) % kSeqs;  // a different subset and order each step
      bool dup = false;
      for (const auto& ch : chunks) dup = dup || ch.seq == s;
      if (dup) continue;
      chunks.push_back({s, length[size_t(s)], {next[size_t(s)]}, false});
      ++length[size_t(s)];
      next[size_t(s)] = int32_t(rng() % V);
    }
    const StepBatch step = build_step(chunks, kPage, kPagesPerSeq);
    cpu.forward(step, lc);
    eager.forward(step, le);
    graphed.forward(step, lg);
    CAPTURE(chunks.size());
    CHECK(rel_l2(le, lc) < 2e-2);
    CHECK(rel_l2(lg, lc) < 2e-2);
  }
}

}  // namespace

TEST_CASE("decode of 1..8 sequences on the small-M kernels matches the CPU (tiny checkpoints)",
          "[gpu][model][small_batch]") {
  struct Case {
    const char* variant;
    int tp;
  };
  const Case cases[] = {{"mlra4", 1}, {"mlra4", 4}, {"mlra2", 1}, {"mla", 1},
                        {"gla2", 1},  {"gqa", 1},   {"gqa", 2},   {"mlra4_gated", 1}};
  for (const Case& k : cases) {
    INFO(k.variant << " tp " << k.tp);
    const auto dir = std::filesystem::path(MLRA_TEST_DATA) / "tiny" / k.variant;
    const ModelConfig c = load_model_config(dir / "config.json", *parse_variant(k.variant));
    REQUIRE(unsupported_tp_reason(c, k.tp).empty());
    auto ckpt = Checkpoint::open(dir);
    check_decode(c, *ckpt, k.tp);
  }
}

TEST_CASE("decode of 1..8 sequences at the release's head shapes matches the CPU",
          "[gpu][model][small_batch]") {
  for (const char* v : {"mlra_4", "mla"}) {
    INFO(v);
    ModelConfig c = load_model_config(
        std::filesystem::path(MLRA_SOURCE_DIR) / "configs/2.9b" / v / "config.json",
        *parse_variant(v));
    c.n_layer = 2;
    c.n_head = 8;
    c.n_embd = 1024;  // n_head * d_n (c_proj's shape)
    c.q_lora_rank = 256;
    c.intermediate_size = 520;
    c.vocab_size = 512;
    c.text_vocab_size = 512;
    c.eot_token = 511;
    c.validate();
    auto ckpt = make_synthetic_checkpoint(c, 77);
    check_decode(c, *ckpt, 1);
  }
}
