// Decode steps of 1..8 sequences against the CPU reference under four kernel option sets:
// cuBLAS for every product (gemv_max_rows 0), our GEMV at one row only (gemv_max_rows 1), the
// defaults (the FMA GEMV at one row, the tensor-core GEMV and its SwiGLU form at 2..8), and the
// defaults with the decode attention's early cache streaming and inline merge (PDL launches after
// the cache write of each layer). Every
// set fuses the latent projections of one-token steps over 4+ units (MLRA-4 at TP1) and composes
// the rest. Models: the tiny checkpoints of the latent and K/V families, rank-0 shards of TP
// plans, and a synthetic model at the release's head shapes (d_n 128, d_r 64, d_c 128 / 512),
// eager and replayed from decode graphs.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <random>
#include <string>

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

struct OptionSet {
  const char* name;
  KernelOptions options;
};

// The first set is the reference the release-shape test holds the others to.
std::vector<OptionSet> option_sets() {
  KernelOptions cublas, one_row, attention;
  cublas.gemv_max_rows = 0;
  one_row.gemv_max_rows = 1;
  attention.attention_early_stream = 1;
  attention.attention_inline_merge = 1;
  return {{"cuBLAS", cublas},
          {"gemv_max_rows 1", one_row},
          {"defaults", KernelOptions{}},
          {"attention early stream + inline merge", attention}};
}

// Largest rel. L2 distance from the CPU's logits over the steps checked, per option set.
struct Errors {
  std::vector<double> worst;
};

// Prefills kSeqs sequences, then runs decode steps of 1, 3, 8, 5, 2 and 8 sequences on the CPU
// and, per option set, on two GPU models (eager; graphs up to 8), checking each step's logits
// against the CPU's within `bound`. Returns the worst distances.
Errors check_decode(const ModelConfig& c, const Checkpoint& ckpt, int tp, double bound) {
  const ShardPlan plan = make_shard_plan(c, tp, 0);
  const std::vector<OptionSet> sets = option_sets();
  auto cpu_b = make_cpu_backend();
  auto comm_c = make_single_rank_communicator();
  const CacheOptions cache{kPage, kSeqs * kPagesPerSeq};
  Transformer cpu(c, plan, ckpt, *cpu_b, *comm_c, cache);
  struct Gpu {
    std::unique_ptr<Backend> eager_b, graph_b;
    std::unique_ptr<Communicator> eager_c, graph_c;
    std::unique_ptr<Transformer> eager, graphed;
    std::vector<float> le, lg;
  };
  std::vector<Gpu> gpus(sets.size());
  for (size_t k = 0; k < sets.size(); ++k) {
    Gpu& g = gpus[k];
    g.eager_b = make_cuda_backend(0, sets[k].options);
    g.graph_b = make_cuda_backend(0, sets[k].options);
    g.eager_c = make_single_rank_communicator();
    g.graph_c = make_single_rank_communicator();
    g.eager = std::make_unique<Transformer>(c, plan, ckpt, *g.eager_b, *g.eager_c, cache);
    g.graphed = std::make_unique<Transformer>(c, plan, ckpt, *g.graph_b, *g.graph_c, cache);
    g.graphed->enable_decode_graphs(8);
  }
  Errors errors{std::vector<double>(sets.size(), 0.0)};
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
  std::vector<float> lc;
  const StepBatch first = build_step(prefill, kPage, kPagesPerSeq);
  cpu.forward(first, lc);
  for (size_t k = 0; k < sets.size(); ++k) {
    INFO(sets[k].name);
    gpus[k].eager->forward(first, gpus[k].le);
    gpus[k].graphed->forward(first, gpus[k].lg);
    REQUIRE(rel_l2(gpus[k].le, lc) < bound);
  }
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
    CAPTURE(chunks.size());
    for (size_t k = 0; k < sets.size(); ++k) {
      INFO(sets[k].name);
      Gpu& g = gpus[k];
      g.eager->forward(step, g.le);
      g.graphed->forward(step, g.lg);
      const double err = rel_l2(g.le, lc), err_graph = rel_l2(g.lg, lc);
      errors.worst[k] = std::max({errors.worst[k], err, err_graph});
      CHECK(err < bound);
      CHECK(err_graph < bound);
      // A graph replays at a padded batch (other GEMV row counts, attention plans): rounding
      // differences only, as in test_decode_graphs.cpp.
      CHECK(rel_l2(g.lg, g.le) < 1e-2);
    }
  }
  return errors;
}

void print_errors(const std::string& what, const Errors& e) {
  const std::vector<OptionSet> sets = option_sets();
  std::printf("decode vs CPU, worst rel. L2 of the logits, %s:", what.c_str());
  for (size_t k = 0; k < sets.size(); ++k) std::printf(" %s %.4f;", sets[k].name, e.worst[k]);
  std::printf("\n");
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
    print_errors(std::string(k.variant) + " tp " + std::to_string(k.tp),
                 check_decode(c, *ckpt, k.tp, 2e-2));
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
    // The GPU keeps activations, q~/q_pe, the latent cache and the attention output in bf16 (rel.
    // rounding error up to 2^-9 each) where the CPU keeps f32; through two layers of random
    // weights the logits drift by ~1e-2 from that rounding alone, more at these head shapes than
    // in the tiny checkpoints (d_n 128 score sums over random q/k amplify each rounding through
    // the softmax). The small-M GEMVs round no more often than the cuBLAS products they replace
    // (the same f32 accumulate and bf16 store), so their distance from the CPU must stay within
    // that of the cuBLAS path plus a margin for the different f32 summation order; an indexing or
    // synchronisation bug moves the logits by O(1). The absolute bound 3e-2 is the same rounding
    // budget with ~1.4x headroom over the 0.021 seen on an H100.
    const Errors e = check_decode(c, *ckpt, 1, 3e-2);
    print_errors(std::string(v) + " release head shapes", e);
    for (size_t k = 1; k < e.worst.size(); ++k) {
      INFO(option_sets()[k].name << " vs cuBLAS: " << e.worst[k] << " vs " << e.worst[0]);
      CHECK(e.worst[k] <= 1.25 * e.worst[0] + 2e-3);
    }
  }
}
