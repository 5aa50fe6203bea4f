// kv_cache_dtype from the server config to the ranks' caches: the key's values and errors, its
// wire encoding, the runners' page budget in FP8 bytes, worker processes (TP 2) holding FP8
// caches whose logits equal the in-process runner's, ModelInfo's field, and the evaluation tokens
// of `perplexity --text`.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>

#include <nlohmann/json.hpp>

#include "engine/engine.h"
#include "engine/runner_factory.h"
#include "engine/server_config.h"
#include "fake_model_runner.h"
#include "models/gpt2_tokenizer.h"
#include "server/cli/perplexity_command.h"
#include "server/proto_convert.h"
#include "server/serving_stack.h"
#include "step_builder.h"

using namespace mlra;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

fs::path tiny(const std::string& v) {
  return fs::path(MLRA_TEST_DATA) / "tiny" / v;
}

RunnerConfig tiny_config(const std::string& v, int tp, CacheEncoding kv_cache) {
  RunnerConfig o;
  o.model_dir = tiny(v);
  o.variant = v;
  o.tp = tp;
  o.page_size = 8;
  o.num_pages = 24;
  o.kv_cache = kv_cache;
  return o;
}

std::unique_ptr<ModelRunner> runner(const RunnerConfig& config) {
  WorkerProcessOptions p;
  p.worker_binary = fs::path(MLRA_BINARY_DIR) / "server" / "mlra-serve";
  p.load_timeout_s = 60;
  p.step_timeout_s = 30;
  return make_runner(config, p);
}

}  // namespace

TEST_CASE("kv_cache_dtype is auto or fp8_e4m3 and reaches the runner config", "[fp8][config]") {
  ServerConfig c;
  c.runner.model_dir = "/m";
  CHECK(c.runner.kv_cache == CacheEncoding::kPlain);
  CHECK(to_json(c).at("kv_cache_dtype") == "auto");
  apply_config_override(c, "kv_cache_dtype=fp8_e4m3");
  CHECK(c.runner.kv_cache == CacheEncoding::kFp8E4M3);
  CHECK(to_json(c).at("kv_cache_dtype") == "fp8_e4m3");
  // The workers' copy: the runner config's wire encoding.
  CHECK(runner_config_from_json(to_json(c.runner), "/").kv_cache == CacheEncoding::kFp8E4M3);
  CHECK_THROWS_WITH(apply_config_override(c, "kv_cache_dtype=fp8"),
                    Contains("kv_cache_dtype") && Contains("auto or fp8_e4m3"));
  CHECK_THROWS_WITH(apply_config_override(c, "kv_cache_dtype=8"), Contains("kv_cache_dtype"));
}

TEST_CASE("an fp8 cache budget holds the pages its smaller rows allow", "[fp8]") {
  // MLRA-4 tiny: 4 latents of 8 + k_pe 4 per layer; f32 rows 144 bytes, FP8 rows 32 + 16 + 8.
  auto budget = [](CacheEncoding e) {
    RunnerConfig o = tiny_config("mlra4", 1, e);
    o.num_pages = 0;
    o.cache_memory_bytes = 2 * 8 * 144 * 10;  // ten f32 pages of 8 tokens, 2 layers
    return runner(o)->info();
  };
  const RunnerInfo plain = budget(CacheEncoding::kPlain), fp8 = budget(CacheEncoding::kFp8E4M3);
  CHECK(plain.cache_bytes_per_token == 2 * 144);
  CHECK(fp8.cache_bytes_per_token == 2 * 56);
  CHECK(plain.num_pages == 10);
  CHECK(fp8.num_pages == 2 * 8 * 144 * 10 / (2 * 56 * 8));
}

TEST_CASE("worker processes hold fp8 caches: TP 2 logits equal the in-process runner's",
          "[fp8][process][tp]") {
  for (const std::string v : {"mlra4", "gqa", "mla"}) {
    INFO(v);
    auto local = runner(tiny_config(v, 1, CacheEncoding::kFp8E4M3));
    auto workers = runner(tiny_config(v, 2, CacheEncoding::kFp8E4M3));
    auto plain = runner(tiny_config(v, 1, CacheEncoding::kPlain));
    CHECK(workers->info().cache_bytes_per_token < plain->info().cache_bytes_per_token);
    std::mt19937 rng(3);
    std::vector<int32_t> toks(19);
    for (auto& t : toks) t = int32_t(rng() % 512);
    std::vector<float> want, got, unquantized;
    const StepBatch step = testing::build_step({{0, 0, toks, true}}, 8, 8);
    local->execute(step, want);
    workers->execute(step, got);
    plain->execute(step, unquantized);
    CHECK(testing::rel_l2(got, want) < 1e-5);
    CHECK(testing::rel_l2(got, unquantized) > 1e-4);  // the workers' caches are FP8 indeed
  }
}

TEST_CASE("ModelInfo reports the kv_cache_dtype", "[fp8][server]") {
  testing::FakeRunnerOptions fo;
  fo.num_pages = 16;
  Engine engine(std::make_unique<testing::FakeModelRunner>(fo), testing::fake_decoder_factory(),
                {});
  ServingLabels labels;
  v1::ModelInfoResponse info;
  fill_model_info(engine, labels, &info);
  CHECK(info.kv_cache_dtype() == "auto");
  labels.kv_cache_dtype = "fp8_e4m3";
  fill_model_info(engine, labels, &info);
  CHECK(info.kv_cache_dtype() == "fp8_e4m3");
}

TEST_CASE("perplexity --text tokenizes like the held-out token files", "[fp8][tokenizer]") {
  const fs::path dir = fs::temp_directory_path() / ("mlra_text_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const fs::path file = dir / "two_docs.txt";
  std::ofstream(file) << "It is a truth universally acknowledged.<|endoftext|>Emma Woodhouse, "
                         "handsome, clever, and rich.";
  const fs::path model = tiny("mlra4");
  const Gpt2Tokenizer tok = Gpt2Tokenizer::load(tokenizer_dir_for("", model));
  std::vector<int32_t> want{tok.eot_id()};
  for (const auto& doc : {std::string("It is a truth universally acknowledged."),
                          std::string("Emma Woodhouse, handsome, clever, and rich.")}) {
    if (want.size() > 1) want.push_back(tok.eot_id());
    const auto ids = tok.encode(doc);
    want.insert(want.end(), ids.begin(), ids.end());
  }
  CHECK(evaluation_tokens("", file.string(), "", model) == want);
  std::ofstream(dir / "bad.txt") << "caf\xe9";  // Latin-1, not UTF-8
  CHECK_THROWS_WITH(evaluation_tokens("", (dir / "bad.txt").string(), "", model),
                    Contains("not valid UTF-8"));
  std::ofstream(dir / "empty.txt") << "";
  CHECK_THROWS_WITH(evaluation_tokens("", (dir / "empty.txt").string(), "", model),
                    Contains("no text"));
  CHECK_THROWS_WITH(evaluation_tokens("", (dir / "missing.txt").string(), "", model),
                    Contains("cannot open"));
  CHECK_THROWS(evaluation_tokens("a.bin", file.string(), "", model));
  fs::remove_all(dir);
}
