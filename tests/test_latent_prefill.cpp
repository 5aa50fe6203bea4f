// The expanded form of MLA / GLA prefill (models/latent_expansion.h): which sequences of a step it
// takes, the scratch layout it gathers, and logits equal to the absorbed form's on the CPU
// reference (fresh prefills, chunks over cached context, mixed with decodes, TP 1 and 2).
#include <catch2/catch.hpp>

#include <filesystem>
#include <random>

#include "engine/local_runner.h"
#include "models/latent_expansion.h"
#include "models/model_config.h"
#include "step_builder.h"

using namespace mlra;
using mlra::testing::build_step;
using mlra::testing::rel_l2;

namespace {

std::filesystem::path tiny(const std::string& v) {
  return std::filesystem::path(MLRA_TEST_DATA) / "tiny" / v;
}

std::vector<int32_t> tokens(int n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = int32_t(rng() % 500);
  return t;
}

// A 2.9B-shaped config (MLA or GLA-2) for plan tests; nothing is loaded.
ModelConfig shape_config(const std::string& variant, LatentPrefill mode) {
  ModelConfig c = load_model_config(
      std::filesystem::path(MLRA_SOURCE_DIR) / "configs/2.9b" / variant / "config.json",
      *parse_variant(variant));
  c.latent_prefill.mode = mode;
  return c;
}

// Decodes of sequences 0 and 1, then a chunk of sequence 2 over 300 cached positions, then a
// fresh 700-token prefill of sequence 3 (the scheduler's order: decodes first).
StepBatch mixed_step(int chunk_tokens) {
  return build_step(
      {{0, 900, {5}}, {1, 40, {6}}, {2, 300, tokens(chunk_tokens, 1)}, {3, 0, tokens(700, 2)}}, 64,
      64);
}

}  // namespace

TEST_CASE("latent prefill plan: the suffix of prefill chunks, by mode, FLOPs and scratch cap",
          "[latent_prefill]") {
  SECTION("auto takes the long chunks, never the decodes") {
    const ModelConfig c = shape_config("mla", LatentPrefill::kAuto);
    const StepBatch s = mixed_step(400);
    const LatentExpansion e = plan_latent_expansion(c, 1, s, 64);
    REQUIRE(e.active());
    CHECK(e.first_seq == 2);
    CHECK(e.first_token == 2);
    CHECK(e.num_tokens == 1100);
    CHECK(e.num_seqs == 2);
    // Sequence 2 covers positions 0..699 (11 scratch pages), sequence 3 0..699 (11 pages).
    CHECK(e.scratch_rows == 22 * 64);
    // Host arrays: renumbered sequence ids, scratch CSR, then the gather slots.
    REQUIRE(e.host.size() == size_t(1100 + 3 + 22 + 22 * 64));
    CHECK(e.host[0] == 0);
    CHECK(e.host[399] == 0);
    CHECK(e.host[400] == 1);
    CHECK(e.host[1100] == 0);
    CHECK(e.host[1101] == 11);
    CHECK(e.host[1102] == 22);
    const int32_t* gather = e.host.data() + 1100 + 3 + 22;
    // Sequence 2 owns pages 128.. (build_step: 64 pages per sequence); padding repeats its last.
    CHECK(gather[0] == 128 * 64);
    CHECK(gather[699] == (128 + 699 / 64) * 64 + 699 % 64);
    CHECK(gather[703] == gather[699]);
    CHECK(gather[704] == 192 * 64);
  }
  SECTION("auto leaves short chunks absorbed; expanded takes any multi-token suffix") {
    const StepBatch s = build_step({{0, 900, {5}}, {1, 0, tokens(20, 3)}}, 64, 64);
    CHECK_FALSE(
        plan_latent_expansion(shape_config("mla", LatentPrefill::kAuto), 1, s, 64).active());
    const LatentExpansion forced =
        plan_latent_expansion(shape_config("mla", LatentPrefill::kExpanded), 1, s, 64);
    CHECK(forced.active());
    CHECK(forced.first_seq == 1);
    CHECK_FALSE(
        plan_latent_expansion(shape_config("mla", LatentPrefill::kAbsorbed), 1, mixed_step(400), 64)
            .active());
  }
  SECTION("a chunk over a long context pays only with enough tokens") {
    // 64 tokens over 20K cached positions: the up-projection of 20K positions costs more than the
    // FLOPs 64 queries save; 1000 tokens save more.
    const ModelConfig c = shape_config("mla", LatentPrefill::kAuto);
    CHECK_FALSE(
        plan_latent_expansion(c, 1, build_step({{0, 20000, tokens(64, 4)}}, 64, 400), 64).active());
    CHECK(plan_latent_expansion(c, 1, build_step({{0, 20000, tokens(1000, 4)}}, 64, 400), 64)
              .active());
  }
  SECTION("the scratch cap stops the suffix; MLRA and TPLA never expand") {
    ModelConfig c = shape_config("mla", LatentPrefill::kAuto);
    const int64_t row = latent_expansion_row_bytes(c, 1);
    CHECK(row == (512 + 2 * 24 * 128 + 64) * 2);
    c.latent_prefill.scratch_bytes = row * 11 * 64;  // room for one of the two sequences
    const LatentExpansion e = plan_latent_expansion(c, 1, mixed_step(400), 64);
    CHECK(e.first_seq == 3);
    CHECK(e.num_tokens == 700);
    CHECK(latent_expansion_row_bytes(c, 4) == (512 + 2 * 6 * 128 + 64) * 2);
    CHECK_FALSE(plan_latent_expansion(shape_config("mlra_4", LatentPrefill::kExpanded), 1,
                                      mixed_step(400), 64)
                    .active());
    ModelConfig tpla = shape_config("mla", LatentPrefill::kExpanded);
    tpla.mla_tp_mode = LatentTpMode::kTpla;
    CHECK_FALSE(plan_latent_expansion(tpla, 2, mixed_step(400), 64).active());
    CHECK(plan_latent_expansion(shape_config("gla_2", LatentPrefill::kAuto), 2, mixed_step(400), 64)
              .active());
  }
}

TEST_CASE("expanded latent prefill gives the absorbed form's logits (CPU reference)",
          "[latent_prefill]") {
  for (const std::string v : {"mla", "gla2", "gla4", "mla_gated"}) {
    for (int tp : {1, 2}) {
      INFO(v << " tp " << tp);
      auto runner = [&](LatentPrefill mode) {
        RunnerConfig o;
        o.model_dir = tiny(v);
        o.variant = v;
        o.tp = tp;
        o.page_size = 8;
        o.num_pages = 64;
        o.latent_prefill.mode = mode;
        return make_local_runner(o);
      };
      auto absorbed = runner(LatentPrefill::kAbsorbed), expanded = runner(LatentPrefill::kExpanded);
      // Fresh prefills of two sequences; then a decode, a chunk over cached context and a fresh
      // prefill in one step (absorbed prefix, expanded suffix); then decodes.
      const std::vector<StepBatch> steps = {
          build_step({{0, 0, tokens(19, 5), true}, {1, 0, tokens(11, 6), true}}, 8, 16),
          build_step({{0, 19, {7}}, {1, 11, tokens(6, 7), true}, {2, 0, tokens(9, 8), true}}, 8,
                     16),
          build_step({{0, 20, {8}}, {1, 17, {9}}, {2, 9, {10}}}, 8, 16),
      };
      double largest = 0.0;
      for (size_t i = 0; i < steps.size(); ++i) {
        INFO("step " << i);
        std::vector<float> a, e;
        absorbed->execute(steps[i], a);
        expanded->execute(steps[i], e);
        REQUIRE(a.size() == e.size());
        const double err = rel_l2(e, a);
        CHECK(err < 1e-5);
        largest = std::max(largest, err);
      }
      // The expanded form really ran: it sums in another order, so the logits are not bit-equal.
      CHECK(largest > 0.0);
    }
  }
}
