// [fuzz] inputs that crashed, hung or exhausted memory in a reader (tests/fuzz/regressions/,
// replayed by scripts/fuzz.sh under the sanitizers too), checked here in the regular build: each
// must now end in the reader's own error, at once.
#include <catch2/catch.hpp>

#include <chrono>
#include <fstream>

#include <nlohmann/json.hpp>

#include "models/checkpoint.h"
#include "models/gpt2_tokenizer.h"
#include "models/model_config.h"
#include "models/safetensors_file.h"
#include "tests/checkpoint_test_util.h"

using namespace mlra;
using namespace mlra::test;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

fs::path regression(const std::string& rel) {
  return fs::path(MLRA_SOURCE_DIR) / "tests" / "fuzz" / "regressions" / rel;
}

std::string read_text(const fs::path& p) {
  const auto b = read_bytes(p);
  return {b.begin(), b.end()};
}

}  // namespace

TEST_CASE("fuzz regression: config.json with n_layer 2450304 is refused at once", "[fuzz]") {
  const std::string text = read_text(regression("config/huge_n_layer.json")).substr(1);
  const auto start = std::chrono::steady_clock::now();
  CHECK_THROWS_WITH(parse_model_config(nlohmann::json::parse(text), *parse_variant("gla2")),
                    Contains("n_layer 2450304 outside [0, 1024]"));
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(1));
  CHECK_THROWS_WITH(parse_model_config(nlohmann::json::parse(R"({"n_layer": 2, "n_head": 4,
      "n_embd": 9000000000, "intermediate_size": 8, "vocab_size": 64, "head_dim": 2})"),
                                       *parse_variant("mha")),
                    Contains("n_embd 9000000000 outside"));
}

TEST_CASE("fuzz regression: a stride-0 (expanded) tensor in a torch .bin is refused", "[fuzz]") {
  ScratchDir d("expanded");
  fs::copy_file(regression("zip/expanded_view.bin"), d / "pytorch_model.bin");
  // 2^40 bf16 elements backed by one stored element: reading it would allocate 4 TB.
  CHECK_THROWS_WITH(Checkpoint::open(d.path()),
                    Contains("overlaps itself") && Contains("1099511627776 elements"));
}

TEST_CASE("fuzz regression: a safetensors shape whose element count wraps is refused", "[fuzz]") {
  const auto bytes = read_bytes(regression("safetensors/wrapping_shape.safetensors"));
  CHECK_THROWS_WITH(
      index_safetensors({reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()}, "f"),
      Contains("tensor 'w'") && Contains("too large"));
}

TEST_CASE("fuzz regression: tokenizer files with bad ids or added tokens", "[fuzz][tokenizer]") {
  const auto mode_rest = [](const std::string& name) {
    return read_text(regression("tokenizer/" + name)).substr(1);
  };
  const std::string no_content = mode_rest("added_token_without_content");
  CHECK_THROWS_AS(Gpt2Tokenizer::parse_hf_json(no_content.substr(0, no_content.find('\0'))),
                  TokenizerError);
  for (const char* name : {"huge_id", "negative_id"}) {
    const std::string rest = mode_rest(name);
    CHECK_THROWS_WITH(Gpt2Tokenizer::parse_bpe(rest.substr(0, rest.find('\0')), ""),
                      Contains("outside [0, 4194304)"));
  }
}
