// [checkpoint][inspect] the 2.9B configs under configs/2.9b: parameter counts (models/VARIANTS.md
// 2.2), per-GPU cache widths at TP 1/2/4/8 (models/VARIANTS.md 6.1), inspect's printed table,
// refused TP degrees, and variant inference from 2.9B-shaped tensor lists (flag F1), every variant.
#include <catch2/catch.hpp>

#include <sstream>

#include "models/cache_shape.h"
#include "models/variant_inference.h"
#include "server/cli/inspect_command.h"
#include "tests/checkpoint_test_util.h"

using namespace mlra;
using Catch::Matchers::Contains;

namespace {

struct Expect {
  const char* dir;
  const char* variant;
  int64_t params;
  // min/max values per GPU at TP 1, 2, 4, 8 (models/VARIANTS.md 6.1 table)
  std::array<std::pair<int64_t, int64_t>, 4> cache;
};

const Expect kExpect[] = {
    {"mha", "mha", 2872593408, {{{6144, 6144}, {3072, 3072}, {1536, 1536}, {768, 768}}}},
    {"gqa", "gqa", 2872593408, {{{1536, 1536}, {768, 768}, {512, 512}, {256, 512}}}},
    {"mqa", "mqa", 2872003584, {{{256, 256}, {256, 256}, {256, 256}, {256, 256}}}},
    {"gta", "gta", 2872003584, {{{832, 832}, {448, 448}, {320, 320}, {192, 320}}}},
    {"mfa", "mfa", 2873232384, {{{512, 512}, {512, 512}, {512, 512}, {512, 512}}}},
    // Our TPA caches each head's full K and V (models/VARIANTS.md 6.1's factored form would be
    // 608/560/536/524): the widths are what the server allocates, read off the shard plan.
    {"tpa", "tpa", 2873183232, {{{6144, 6144}, {3072, 3072}, {1536, 1536}, {768, 768}}}},
    {"mla", "mla", 2872052736, {{{576, 576}, {576, 576}, {576, 576}, {576, 576}}}},
    {"gla_2", "gla2", 2872630272, {{{576, 576}, {320, 320}, {320, 320}, {320, 320}}}},
    {"gla_4", "gla4", 2873220096, {{{576, 576}, {320, 320}, {192, 192}, {192, 192}}}},
    {"mlra_2", "mlra2", 2872630272, {{{576, 576}, {320, 320}, {192, 192}, {192, 192}}}},
    {"mlra_4", "mlra4", 2873220096, {{{576, 576}, {320, 320}, {192, 192}, {192, 192}}}},
};
constexpr int kTp[] = {1, 2, 4, 8};

std::filesystem::path config_path(const char* dir) {
  return std::filesystem::path(MLRA_SOURCE_DIR) / "configs" / "2.9b" / dir / "config.json";
}

// Checkpoint that exists only as names and shapes (no bytes): enough for variant inference.
class ShapeOnlyCheckpoint final : public Checkpoint {
 public:
  explicit ShapeOnlyCheckpoint(const std::vector<TensorSpec>& specs) {
    for (const auto& s : specs) {
      TensorInfo t;
      t.name = s.name;
      t.file = "shapes";
      t.shape = s.shape;
      infos_[s.name] = t;
    }
  }
  const std::filesystem::path& dir() const override { return dir_; }
  std::vector<std::string> names() const override {
    std::vector<std::string> out;
    for (const auto& [n, t] : infos_) out.push_back(n);
    return out;
  }
  bool has(const std::string& n) const override { return infos_.count(n) != 0; }
  const TensorInfo& info(const std::string& n) const override { return infos_.at(n); }
  std::string format() const override { return "shapes"; }
  std::vector<std::string> files() const override { return {}; }
  uint64_t total_bytes() const override { return 0; }

 private:
  std::filesystem::path dir_ = "shapes";
  std::map<std::string, TensorInfo> infos_;
};

}  // namespace

TEST_CASE("2.9B configs: parameter counts and per-GPU cache widths", "[checkpoint][inspect]") {
  for (const auto& e : kExpect) {
    INFO(e.dir);
    const ModelConfig c = load_model_config(config_path(e.dir), *parse_variant(e.variant));
    CHECK(c.param_count() == e.params);
    for (int i = 0; i < 4; ++i) {
      INFO("TP " << kTp[i]);
      const CacheWidth w = cache_values_per_rank(c, kTp[i]);
      CHECK(w.min_values == e.cache[i].first);
      CHECK(w.max_values == e.cache[i].second);
    }
  }
}

TEST_CASE("GQA TP 4 and 8 duplicate straddling KV heads as models/VARIANTS.md 6.1 lists",
          "[checkpoint][inspect]") {
  const ModelConfig c = load_model_config(config_path("gqa"), *parse_variant("gqa"));
  // TP=8: KV heads {0}, {0,1}, {1,2}, {2}, {3}, {3,4}, {4,5}, {5} -> 1,2,2,1,1,2,2,1 heads.
  const int64_t tp8[] = {1, 2, 2, 1, 1, 2, 2, 1};
  for (int r = 0; r < 8; ++r) CHECK(cache_values_on_rank(c, 8, r) == 256 * tp8[r]);
  for (int r = 0; r < 4; ++r) CHECK(cache_values_on_rank(c, 4, r) == 512);
}

TEST_CASE("TP degrees a variant cannot take are refused with a reason", "[checkpoint][inspect]") {
  const ModelConfig mlra = load_model_config(config_path("mlra_4"), *parse_variant("mlra4"));
  CHECK_THROWS_WITH(cache_values_per_rank(mlra, 3), Contains("4 latent units"));
  CHECK_THROWS_WITH(cache_values_per_rank(mlra, 6), Contains("multiple of the 4 latent units"));
  CHECK(cache_values_per_rank(mlra, 12).max_values ==
        192);  // each latent over 3 ranks, 8 heads each
  CHECK(cache_values_per_rank(mlra, 16).max_values == 192);  // 24 heads split over 4 ranks
  const ModelConfig mlra2 = load_model_config(config_path("mlra_2"), *parse_variant("mlra2"));
  CHECK_THROWS_WITH(cache_values_per_rank(mlra2, 32), Contains("12 heads per latent"));
  const ModelConfig mha = load_model_config(config_path("mha"), *parse_variant("mha"));
  CHECK_THROWS_WITH(cache_values_per_rank(mha, 5), Contains("n_head 24 is not divisible by tp 5"));
  CHECK_THROWS_AS(cache_values_per_rank(mha, 0), ConfigError);
  CHECK(tp_refusal(mha, 16).has_value());
  CHECK_FALSE(tp_refusal(mha, 8).has_value());
}

TEST_CASE("inspect --config-only prints the cache table for every 2.9B variant",
          "[checkpoint][inspect]") {
  for (const auto& e : kExpect) {
    INFO(e.dir);
    std::ostringstream out;
    run_inspect({config_path(e.dir), true, e.variant}, out);
    const std::string text = out.str();
    CHECK_THAT(text, Contains("variant     " + parse_variant(e.variant)->name()));
    CHECK_THAT(text, Contains("parameters  " + std::to_string(e.params)));
    CHECK_THAT(text, Contains("float32"));
    std::istringstream lines(text);
    std::string line;
    int rows = 0;
    while (std::getline(lines, line)) {
      for (int i = 0; i < 4; ++i) {
        if (line.rfind("  TP " + std::to_string(kTp[i]) + " ", 0) != 0) continue;
        ++rows;
        const auto [lo, hi] = e.cache[i];
        const std::string values =
            lo == hi ? std::to_string(lo) : std::to_string(lo) + "-" + std::to_string(hi);
        const std::string bytes = lo == hi ? std::to_string(2 * lo)
                                           : std::to_string(2 * lo) + "-" + std::to_string(2 * hi);
        std::istringstream cols(line.substr(7));
        std::string v, b;
        cols >> v >> b;
        CHECK(v == values);
        CHECK(b == bytes);
      }
    }
    CHECK(rows == 4);
  }
}

TEST_CASE("inspect on a checkpoint folder validates and infers", "[checkpoint][inspect]") {
  std::ostringstream out;
  run_inspect({test::loader_data("tiny_mlra4_bin"), false, ""}, out);
  CHECK_THAT(out.str(), Contains("variant     mlra4 (inferred from attn.kv_b_proj [4,8,64]"));
  CHECK_THAT(out.str(), Contains("bfloat16 (33 tensors)"));
  CHECK_THAT(out.str(), Contains("pytorch-bin, 2 file(s)"));
  std::ostringstream bad;
  CHECK_THROWS_WITH(run_inspect({test::loader_data("tiny_mlra4_bin"), false, "gla4"}, bad),
                    Contains("checkpoint holds mlra4"));
  CHECK_THROWS_AS(run_inspect({config_path("mha"), true, "llama"}, bad), std::invalid_argument);
}

TEST_CASE("every variant and gated sibling is inferred from 2.9B-shaped tensors", "[checkpoint]") {
  for (const auto& e : kExpect) {
    for (bool gated : {false, true}) {
      if (gated && !parse_variant(std::string(e.variant) + "_gated")) continue;
      Variant v = *parse_variant(e.variant);
      v.gated = gated;
      INFO(v.name());
      const ModelConfig c = load_model_config(config_path(e.dir), *parse_variant(e.variant));
      ModelConfig cg = c;
      cg.variant = v;
      const ShapeOnlyCheckpoint ck(expected_tensors(cg));
      const auto found = infer_variant(ck);
      CHECK(found.variant == v);
      CHECK_NOTHROW(check_variant(ck, cg));
      CHECK_FALSE(found.evidence.empty());
    }
  }
  // Flag F1's literal shapes.
  const ModelConfig mlra2 = load_model_config(config_path("mlra_2"), *parse_variant("mlra2"));
  const auto found = infer_variant(ShapeOnlyCheckpoint(expected_tensors(mlra2)));
  CHECK_THAT(found.evidence, Contains("[4,128,3072]") && Contains("12 heads per latent"));
}
