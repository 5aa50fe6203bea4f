// Every variant's CPU prefill logits against golden logits from our independent float64
// PyTorch reference (scripts/reference_model.py), and its greedy continuation of 32 tokens.
// The per-variant max relative error is printed so the closing note can quote it.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "engine/local_runner.h"
#include "step_builder.h"

using namespace mlra;
using mlra::testing::build_step;
using mlra::testing::rel_l2;

namespace {

std::vector<float> read_floats(const std::filesystem::path& p, size_t n) {
  std::ifstream in(p, std::ios::binary);
  std::vector<float> v(n);
  in.read(reinterpret_cast<char*>(v.data()), std::streamsize(n * sizeof(float)));
  REQUIRE(bool(in));
  return v;
}

std::unique_ptr<ModelRunner> runner(const std::filesystem::path& dir, const std::string& v) {
  RunnerConfig o;
  o.model_dir = dir;
  o.variant = v;
  o.page_size = 16;
  o.num_pages = 32;
  return make_local_runner(o);
}

}  // namespace

TEST_CASE("prefill logits and greedy continuations match the float64 reference",
          "[model][golden]") {
  const std::filesystem::path root = std::filesystem::path(MLRA_TEST_DATA) / "tiny";
  int checked = 0;
  for (const auto& entry : std::filesystem::directory_iterator(root)) {
    if (!entry.is_directory()) continue;
    const std::string v = entry.path().filename().string();
    INFO(v);
    std::ifstream in(entry.path() / "golden" / "golden.json");
    REQUIRE(bool(in));
    const auto golden = nlohmann::json::parse(in);
    auto r = runner(entry.path(), v);
    const int64_t V = r->config().vocab_size;
    double worst = 0;
    std::vector<std::vector<int32_t>> prompts;
    for (const auto& p : golden["prompts"]) {
      const auto tokens = p["tokens"].get<std::vector<int32_t>>();
      prompts.push_back(tokens);
      const auto expect = read_floats(entry.path() / "golden" / p["logits_file"].get<std::string>(),
                                      tokens.size() * size_t(V));
      std::vector<float> got;
      r->execute(build_step({{0, 0, tokens, true}}, 16, 16), got);
      const double err = rel_l2(got, expect);
      worst = std::max(worst, err);
      CHECK(err < 1e-4);
    }
    std::printf("golden %-16s max rel L2 error %.3g\n", v.c_str(), worst);

    const auto& g = golden["greedy"];
    const auto expect_tokens = g["tokens"].get<std::vector<int32_t>>();
    auto seq = prompts[g["prompt_index"].get<size_t>()];
    auto gr = runner(entry.path(), v);
    std::vector<float> logits;
    gr->execute(build_step({{0, 0, seq, false}}, 16, 16), logits);
    std::vector<int32_t> got_tokens;
    for (size_t k = 0; k < expect_tokens.size(); ++k) {
      const int32_t next = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
      got_tokens.push_back(next);
      gr->execute(build_step({{0, int32_t(seq.size()), {next}, false}}, 16, 16), logits);
      seq.push_back(next);
    }
    CHECK(got_tokens == expect_tokens);
    ++checked;
  }
  CHECK(checked == 19);
}
