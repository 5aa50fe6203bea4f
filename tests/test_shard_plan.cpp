// Sharding plans: per-rank cache widths of the 2.9B configs equal models/VARIANTS.md 6.1, every
// head and latent is covered, and unsupported TP degrees are refused with a reason.
#include <catch2/catch.hpp>

#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "models/model_config.h"
#include "models/shard_plan.h"

using namespace mlra;

namespace {

ModelConfig config_2p9b(const std::string& name) {
  nlohmann::json j = {{"n_layer", 24},
                      {"n_head", 24},
                      {"n_embd", 3072},
                      {"intermediate_size", 9880},
                      {"vocab_size", 50304}};
  const Variant v = *parse_variant(name);
  if (v.is_latent()) {
    j.update({{"q_lora_rank", 1024},
              {"kv_lora_rank", 512},
              {"qk_nope_head_dim", 128},
              {"qk_rope_head_dim", 64}});
  } else {
    j.update({{"head_dim", v.kind == AttentionKind::kMfa ? 256 : 128},
              {"group_size", 4},
              {"share_q_dim", 2048},
              {"rank", 2},
              {"q_rank", 6}});
    if (v.kind == AttentionKind::kMqa) j["group_size"] = 24;
  }
  return parse_model_config(j, v);
}

std::pair<int64_t, int64_t> width_range(const ModelConfig& c, int tp) {
  int64_t lo = INT64_MAX, hi = 0;
  for (int r = 0; r < tp; ++r) {
    const int64_t w = make_shard_plan(c, tp, r).cache_width;
    lo = std::min(lo, w);
    hi = std::max(hi, w);
  }
  return {lo, hi};
}

}  // namespace

TEST_CASE("per-rank cache widths match models/VARIANTS.md 6.1 for the 2.9B configs", "[shard]") {
  using W = std::pair<int64_t, int64_t>;
  const std::map<std::string, std::vector<W>> expected = {
      {"mha", {{6144, 6144}, {3072, 3072}, {1536, 1536}, {768, 768}}},
      {"gqa", {{1536, 1536}, {768, 768}, {512, 512}, {256, 512}}},
      {"mqa", {{256, 256}, {256, 256}, {256, 256}, {256, 256}}},
      {"gta", {{832, 832}, {448, 448}, {320, 320}, {192, 320}}},
      {"mfa", {{512, 512}, {512, 512}, {512, 512}, {512, 512}}},
      {"mla", {{576, 576}, {576, 576}, {576, 576}, {576, 576}}},
      {"gla2", {{576, 576}, {320, 320}, {320, 320}, {320, 320}}},
      {"gla4", {{576, 576}, {320, 320}, {192, 192}, {192, 192}}},
      {"mlra2", {{576, 576}, {320, 320}, {192, 192}, {192, 192}}},
      {"mlra4", {{576, 576}, {320, 320}, {192, 192}, {192, 192}}},
  };
  for (const auto& [name, widths] : expected) {
    const ModelConfig c = config_2p9b(name);
    const int tps[] = {1, 2, 4, 8};
    for (int i = 0; i < 4; ++i) {
      INFO(name << " tp=" << tps[i]);
      CHECK(width_range(c, tps[i]) == widths[i]);
    }
  }
}

TEST_CASE("every (latent, head) pair of the model is owned by exactly one rank", "[shard]") {
  for (const char* name : {"mla", "gla2", "gla4", "mlra2", "mlra4"}) {
    const ModelConfig c = config_2p9b(name);
    std::multiset<std::pair<int, int>> all;
    for (const auto& u : latent_units(c))
      for (int h = u.head_begin; h < u.head_end; ++h) all.insert({u.latent, h});
    for (int tp : {1, 2, 4, 8}) {
      std::multiset<std::pair<int, int>> owned;
      int64_t ff = 0;
      for (int r = 0; r < tp; ++r) {
        const ShardPlan p = make_shard_plan(c, tp, r);
        ff += p.ff_end - p.ff_begin;
        for (const auto& u : p.units)
          for (int h = u.head_begin; h < u.head_end; ++h) owned.insert({u.latent, h});
      }
      INFO(name << " tp=" << tp);
      CHECK(owned == all);
      CHECK(ff == c.intermediate_size);
    }
  }
}

TEST_CASE("MLRA-4 at TP4 puts latent head r with all 24 heads on rank r", "[shard]") {
  const ModelConfig c = config_2p9b("mlra4");
  for (int r = 0; r < 4; ++r) {
    const ShardPlan p = make_shard_plan(c, 4, r);
    REQUIRE(p.latents == std::vector<int>{r});
    CHECK(p.heads.size() == 24);
  }
  const ShardPlan p2 = make_shard_plan(config_2p9b("mlra2"), 2, 1);
  CHECK(p2.latents == std::vector<int>{1, 3});  // pure head split: heads 12..23, both branches
  CHECK(p2.heads.front() == 12);
  CHECK(p2.heads.size() == 12);
}

TEST_CASE("unsupported TP degrees are refused with a reason", "[shard]") {
  CHECK_THROWS_WITH(make_shard_plan(config_2p9b("mlra4"), 3, 0), Catch::Contains("latent units"));
  CHECK_THROWS_WITH(make_shard_plan(config_2p9b("gqa"), 16, 0), Catch::Contains("n_head"));
  CHECK_THROWS_AS(make_shard_plan(config_2p9b("mla"), 2, 2), ShardError);
  CHECK(unsupported_tp_reason(config_2p9b("mlra2"), 8).empty());
}
