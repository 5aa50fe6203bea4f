// Variant names, sibling existence and config validation.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include "models/model_config.h"
#include "models/tensor_layout.h"
#include "models/variant.h"

using namespace mlra;

TEST_CASE("variant names parse in every spelling and unknown siblings are refused") {
  CHECK(parse_variant("MLRA-4")->kind == AttentionKind::kMlra4);
  CHECK(parse_variant("mlra_2")->kind == AttentionKind::kMlra2);
  CHECK(parse_variant("gla_2_gated")->gated);
  CHECK(parse_variant("mla_no_scale")->no_scale);
  CHECK_FALSE(parse_variant("mha_gated").has_value());
  CHECK_FALSE(parse_variant("mlra4_no_scale").has_value());
  CHECK_FALSE(parse_variant("llama").has_value());
  for (const auto& v : all_variants()) CHECK(parse_variant(v.name()) == v);
}

static nlohmann::json latent_2p9b() {
  return {{"n_layer", 24}, {"n_head", 24}, {"n_embd", 3072}, {"intermediate_size", 9880},
          {"vocab_size", 50304}, {"block_size", 2048}, {"q_lora_rank", 1024},
          {"kv_lora_rank", 512}, {"qk_nope_head_dim", 128}, {"qk_rope_head_dim", 64}};
}

TEST_CASE("2.9B parameter counts match models/VARIANTS.md 2.2") {
  auto j = latent_2p9b();
  CHECK(parse_model_config(j, *parse_variant("mlra4")).param_count() == 2873220096LL);
  j["intermediate_size"] = 10048;
  CHECK(parse_model_config(j, *parse_variant("mlra2")).param_count() == 2872630272LL);
  CHECK(parse_model_config(j, *parse_variant("gla2")).param_count() == 2872630272LL);
  j["intermediate_size"] = 9448;
  j["q_lora_rank"] = 1536;
  CHECK(parse_model_config(j, *parse_variant("mla")).param_count() == 2872052736LL);
  nlohmann::json m = {{"n_layer", 24}, {"n_head", 24}, {"n_embd", 3072}, {"intermediate_size", 8192},
                      {"vocab_size", 50304}, {"head_dim", 128}};
  CHECK(parse_model_config(m, *parse_variant("mha")).param_count() == 2872593408LL);
  m["intermediate_size"] = 9728;
  m["group_size"] = 4;
  CHECK(parse_model_config(m, *parse_variant("gqa")).param_count() == 2872593408LL);
}

TEST_CASE("missing and inconsistent fields name the field") {
  auto j = latent_2p9b();
  j.erase("kv_lora_rank");
  CHECK_THROWS_WITH(parse_model_config(j, *parse_variant("mlra4")),
                    Catch::Contains("kv_lora_rank"));
  nlohmann::json g = {{"n_layer", 2}, {"n_head", 24}, {"n_embd", 3072}, {"intermediate_size", 64},
                      {"vocab_size", 50304}, {"head_dim", 128}, {"group_size", 11}};
  CHECK_THROWS_WITH(parse_model_config(g, *parse_variant("gqa")), Catch::Contains("group_size"));
}
