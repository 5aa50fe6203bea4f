// Decode steps of 1..8 sequences against the CPU reference under three kernel option sets:
// cuBLAS for every product (gemv_max_rows 0), our GEMV at one row only (gemv_max_rows 1), and
// the defaults (the FMA GEMV at one row, the tensor-core GEMV and its SwiGLU form at 2..8). Every
// set fuses the latent projections of one-token steps over 4+ units (MLRA-4 at TP1) and composes
// the rest. Models: the tiny checkpoints of the latent and K/V families, rank-0 shards of TP
// plans, and a synthetic model at the release's head shapes (d_n 128, d_r 64, d_c 128 / 512),
// eager and replayed from decode graphs.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdio>
#include <string>

#include "gpu_decode_fixture.h"
#include "gpu_test_util.h"

using namespace mlra;
using namespace mlra::gputest;

namespace {

struct OptionSet {
  const char* name;
  KernelOptions options;
};

// The first set is the reference the release-shape test holds the others to.
std::vector<OptionSet> option_sets() {
  return {{"cuBLAS", with_option(&KernelOptions::gemv_max_rows, 0)},
          {"gemv_max_rows 1", with_option(&KernelOptions::gemv_max_rows, 1)},
          {"defaults", KernelOptions{}}};
}

// Largest rel. L2 distance from the CPU's logits over the steps checked, per option set.
struct Errors {
  std::vector<double> worst;
};

// Prefills 8 sequences, then runs decode steps of 1, 3, 8, 5, 2 and 8 sequences on the CPU
// and, per option set, on two GPU models (eager; graphs up to 8), checking each step's logits
// against the CPU's within `bound`. Returns the worst distances.
Errors check_decode(const ModelConfig& c, const Checkpoint& ckpt, int tp, double bound) {
  const ShardPlan plan = make_shard_plan(c, tp, 0);
  const std::vector<OptionSet> sets = option_sets();
  DecodeSequences seqs({8, 23, 5, 9, true}, c.vocab_size);
  DecodeModel cpu = cpu_model(c, plan, ckpt, seqs.cache());
  std::vector<DecodeModel> eager, graphed;
  for (const OptionSet& set : sets) {
    eager.push_back(cuda_model(c, plan, ckpt, seqs.cache(), set.options));
    graphed.push_back(cuda_model(c, plan, ckpt, seqs.cache(), set.options, 8));
  }
  Errors errors{std::vector<double>(sets.size(), 0.0)};
  const StepBatch first = seqs.prefill();
  cpu.forward(first);
  for (size_t k = 0; k < sets.size(); ++k) {
    INFO(sets[k].name);
    forward_all({&eager[k], &graphed[k]}, first);
    REQUIRE(rel_l2(eager[k].logits, cpu.logits) < bound);
  }
  for (const int batch : {1, 3, 8, 5, 2, 8}) {
    const StepBatch step = seqs.decode_strided(batch, 3);  // another subset and order each step
    cpu.forward(step);
    CAPTURE(batch);
    for (size_t k = 0; k < sets.size(); ++k) {
      INFO(sets[k].name);
      const std::vector<float>& le = eager[k].forward(step);
      const std::vector<float>& lg = graphed[k].forward(step);
      const double err = rel_l2(le, cpu.logits), err_graph = rel_l2(lg, cpu.logits);
      errors.worst[k] = std::max({errors.worst[k], err, err_graph});
      CHECK(err < bound);
      CHECK(err_graph < bound);
      // A graph replays at a padded batch (other GEMV row counts, attention plans): rounding
      // differences only, as in test_decode_graphs.cpp.
      CHECK(rel_l2(lg, le) < kDeviceDecodeBound);
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
    const TinyModel m = tiny_model(k.variant);
    REQUIRE(unsupported_tp_reason(m.config, k.tp).empty());
    print_errors(std::string(k.variant) + " tp " + std::to_string(k.tp),
                 check_decode(m.config, *m.ckpt, k.tp, kTinyDecodeBound));
  }
}

TEST_CASE("decode of 1..8 sequences at the release's head shapes matches the CPU",
          "[gpu][model][small_batch]") {
  for (const char* v : {"mlra_4", "mla"}) {
    INFO(v);
    const ModelConfig c = release_head_config(v, 520);
    auto ckpt = make_synthetic_checkpoint(c, 77);
    // The small-M GEMVs round no more often than the cuBLAS products they replace (the same f32
    // accumulate and bf16 store), so their distance from the CPU must stay within that of the
    // cuBLAS path plus a margin for the different f32 summation order, and within the
    // release-head-shape bound (gpu_decode_fixture.h).
    const Errors e = check_decode(c, *ckpt, 1, kReleaseDecodeBound);
    print_errors(std::string(v) + " release head shapes", e);
    for (size_t k = 1; k < e.worst.size(); ++k) {
      INFO(option_sets()[k].name << " vs cuBLAS: " << e.worst[k] << " vs " << e.worst[0]);
      CHECK(e.worst[k] <= 1.25 * e.worst[0] + 2e-3);
    }
  }
}
