// [config] The contract of configs/ (configs/README.md): every server config there parses and
// validates (unknown keys and bad values would throw) and names a known variant; the default
// config's model (models/default/README.md) loads through the release loader as that variant;
// every configs/2.9b/<folder>/config.json is the release's 2.9B model of the variant its folder
// names.
#include <catch2/catch.hpp>

#include <filesystem>
#include <vector>

#include "engine/server_config.h"
#include "models/model_config.h"
#include "models/model_loader.h"
#include "models/variant.h"

using namespace mlra;

namespace {

const std::filesystem::path kConfigs = std::filesystem::path(MLRA_SOURCE_DIR) / "configs";

std::vector<std::filesystem::path> entries(const std::filesystem::path& dir, bool folders) {
  std::vector<std::filesystem::path> out;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    if (folders ? e.is_directory() : e.path().extension() == ".json") out.push_back(e.path());
  return out;
}

}  // namespace

TEST_CASE("every server config under configs/ parses, validates and names a variant", "[config]") {
  const auto files = entries(kConfigs, false);
  REQUIRE(files.size() >= 2);  // default.json and the TPLA example at least
  for (const auto& file : files) {
    INFO(file.string());
    ServerConfig c;
    REQUIRE_NOTHROW(c = load_server_config(file));
    CHECK(parse_variant(c.runner.variant).has_value());
    CHECK(c.runner.model_dir.is_absolute());
  }
}

TEST_CASE("the default config's model loads as its variant, in the release's format", "[config]") {
  const ServerConfig c = load_server_config(kConfigs / "default.json");
  const auto variant = parse_variant(c.runner.variant);
  REQUIRE(variant.has_value());
  const LoadedModel m =
      load_model(c.runner.model_dir, *variant);  // variant check + every name/shape
  CHECK(m.config.param_count() == 11'717'568);
  CHECK(m.checkpoint->format() == "pytorch-bin");
  CHECK(m.checkpoint->files().size() == 2);
  // bf16 weights; the tied head is one storage with the embedding (models/VARIANTS.md F6).
  CHECK(m.checkpoint->info("layernorm.weight").dtype == DType::kBF16);
  CHECK(m.checkpoint->info("lm_head.weight").storage_id ==
        m.checkpoint->info("transformer.wte.weight").storage_id);
}

TEST_CASE("every configs/2.9b folder holds the 2.9B model of the variant it names", "[config]") {
  const auto folders = entries(kConfigs / "2.9b", true);
  CHECK(folders.size() == 11);  // the eleven released variants
  for (const auto& folder : folders) {
    INFO(folder.string());
    const auto variant = parse_variant(folder.filename().string());
    REQUIRE(variant.has_value());
    ModelConfig c;
    REQUIRE_NOTHROW(c = load_model_config(folder / "config.json", *variant));
    CHECK(c.n_layer == 24);
    CHECK(c.n_head == 24);
    CHECK(c.n_embd == 3072);
    CHECK(c.vocab_size == 50304);
    // Every release model has about 2.87B parameters (models/VARIANTS.md 2.2).
    CHECK(c.param_count() > 2'870'000'000);
    CHECK(c.param_count() < 2'875'000'000);
  }
}
