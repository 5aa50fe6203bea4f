// Server config: configs/default.json parses, relative model_dir resolves against the file's
// folder, unknown keys / wrong types / bad values are errors naming the key, overrides apply, and
// the runner part (RunnerConfig) survives its JSON round trip with every field; tokenizer_dir
// resolves, round-trips and is checked for tokenizer files.
#include <catch2/catch.hpp>

#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include <unistd.h>
#include <nlohmann/json.hpp>

#include "engine/runner_config.h"
#include "engine/server_config.h"
#include "models/gpt2_tokenizer.h"
#include "server/serving_stack.h"

using namespace mlra;

namespace {

std::string error_of(const nlohmann::json& j) {
  try {
    parse_server_config(j, "/base");
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("the default config parses and points at the default model", "[engine][config]") {
  const std::filesystem::path file =
      std::filesystem::path(MLRA_TEST_DATA).parent_path().parent_path() / "configs" /
      "default.json";
  ServerConfig c = load_server_config(file);
  std::ifstream in(file);
  const std::string raw = nlohmann::json::parse(in).at("model_dir").get<std::string>();
  REQUIRE(std::filesystem::path(raw).is_relative());
  CHECK(c.runner.model_dir == (file.parent_path() / raw).lexically_normal());
  CHECK(c.runner.model_dir.is_absolute());
  CHECK(c.runner.page_size == 64);
  // absolute stays
  CHECK(parse_server_config(to_json(c), "/elsewhere").runner.model_dir == c.runner.model_dir);
}

TEST_CASE("config errors name the offending key", "[engine][config]") {
  const nlohmann::json base = {{"model_dir", "m"}};
  CHECK(parse_server_config(base, "/base").runner.model_dir == "/base/m");
  auto with = [&](const char* key, nlohmann::json v) {
    auto j = base;
    j[key] = v;
    return error_of(j);
  };
  CHECK(with("max_batch", 4).find("unknown config key 'max_batch'") != std::string::npos);
  CHECK(with("page_size", "64").find("'page_size'") != std::string::npos);
  CHECK(with("page_size", 0).find("'page_size'") != std::string::npos);
  CHECK(with("port", 70000).find("'port'") != std::string::npos);
  CHECK(with("tp", 3000000000LL).find("'tp'") != std::string::npos);
  CHECK(with("variant", "llama").find("'variant'") != std::string::npos);
  CHECK(with("backend", "tpu").find("'backend'") != std::string::npos);
  CHECK(with("prefix_cache", 1).find("'prefix_cache'") != std::string::npos);
  CHECK(with("log_level", "loud").find("'log_level'") != std::string::npos);
  CHECK(with("log_prompts", "yes").find("'log_prompts'") != std::string::npos);
  CHECK(with("max_rpc_threads", 8).find("'max_rpc_threads'") != std::string::npos);
  CHECK(with("metrics_port", 70000).find("'metrics_port'") != std::string::npos);
  CHECK(error_of(nlohmann::json::object()).find("'model_dir'") != std::string::npos);
  CHECK(with("max_step_tokens", 256).empty());
  CHECK(with("latent_prefill", "eager").find("'latent_prefill'") != std::string::npos);
  CHECK(with("latent_prefill", "expanded").empty());
  CHECK(with("latent_prefill_scratch_bytes", -1).find("'latent_prefill_scratch_bytes'") !=
        std::string::npos);
  CHECK(with("mla_tp_mode", "shard").find("'mla_tp_mode'") != std::string::npos);
  CHECK(with("mla_tp_mode", "tpla").empty());
  CHECK(with("device", -1).find("'device'") != std::string::npos);
  CHECK(with("device", "0").find("'device'") != std::string::npos);
  CHECK(with("tpla_seed", -1).find("'tpla_seed'") != std::string::npos);
  CHECK(with("kernels", 1).find("'kernels'") != std::string::npos);
  CHECK(with("kernels", {{"nope", 1}}).find("'kernels.nope'") != std::string::npos);
  CHECK(with("kernels", {{"weight_prefetch_l2", 0}})
            .find("unknown config key "
                  "'kernels.weight_prefetch_l2'") != std::string::npos);
  CHECK(with("kernels", nlohmann::json::object()).empty());
  // dtype follows the backend: auto, or the backend's own.
  CHECK(with("dtype", "fp16").find("'dtype'") != std::string::npos);
  CHECK(with("dtype", "bf16").find("needs backend cuda") != std::string::npos);
  CHECK(with("dtype", "fp32").empty());
  auto cuda_with_dtype = [&](const char* dtype) {
    auto j = base;
    j["backend"] = "cuda";
    j["dtype"] = dtype;
    return error_of(j);
  };
  CHECK(cuda_with_dtype("fp32").find("'dtype'") != std::string::npos);
  CHECK(cuda_with_dtype("bf16").empty());
  CHECK(cuda_with_dtype("auto").empty());
}

TEST_CASE("the effective dtype is the backend's", "[engine][config]") {
  ServerConfig c;
  CHECK(c.dtype == "auto");
  CHECK(effective_dtype(c) == "fp32");
  c.runner.backend = "cuda";
  CHECK(effective_dtype(c) == "bf16");
}

TEST_CASE("overrides apply key=value with JSON or plain-string values", "[engine][config]") {
  ServerConfig c = parse_server_config({{"model_dir", "/m"}}, "/");
  apply_config_override(c, "port=1234");
  apply_config_override(c, "prefix_cache=false");
  apply_config_override(c, "variant=mla_gated");
  apply_config_override(c, "host=\"127.0.0.1\"");
  apply_config_override(c, "log_prompts=true");
  apply_config_override(c, "metrics_port=9464");
  CHECK(c.port == 1234);
  CHECK_FALSE(c.prefix_cache);
  CHECK(c.runner.variant == "mla_gated");
  CHECK(c.host == "127.0.0.1");
  CHECK(c.log_prompts);
  CHECK(c.metrics_port == 9464);
  CHECK_THROWS_AS(apply_config_override(c, "nope=1"), ConfigError);
  CHECK_THROWS_AS(apply_config_override(c, "port"), ConfigError);
  CHECK_THROWS_AS(apply_config_override(c, "port=-5"), ConfigError);
  EngineOptions e = engine_options(c);
  CHECK_FALSE(e.enable_prefix_cache);
  CHECK(e.max_running_seqs == c.max_running_seqs);
}

TEST_CASE("a relative tpla_transform file resolves against the config's folder",
          "[engine][config]") {
  auto with = [](const std::string& t) {
    return parse_server_config({{"model_dir", "m"}, {"tpla_transform", t}}, "/base/configs")
        .runner.tpla.transform;
  };
  CHECK(with("../transforms/pca.tpla") == "/base/transforms/pca.tpla");
  CHECK(with("/abs/pca.tpla") == "/abs/pca.tpla");
  for (const char* name : {"identity", "hadamard", "random"}) CHECK(with(name) == name);
  ServerConfig c = parse_server_config({{"model_dir", "m"}}, "/base");
  apply_config_override(c, "tpla_transform=rel/pca.tpla");  // overrides: the working directory
  CHECK(c.runner.tpla.transform ==
        (std::filesystem::current_path() / "rel/pca.tpla").lexically_normal().string());
}

TEST_CASE("runner keys fill the runner config and survive a round trip", "[engine][config]") {
  ServerConfig c = parse_server_config({{"model_dir", "/m"}}, "/");
  CHECK(c.runner.latent_prefill.mode == LatentPrefill::kAuto);
  RunnerConfig defaults;
  defaults.model_dir = "/m";
  CHECK(c.runner == defaults);  // every other field at its default
  apply_config_override(c, "latent_prefill=absorbed");
  apply_config_override(c, "latent_prefill_scratch_bytes=1048576");
  apply_config_override(c, "device=3");
  apply_config_override(c, "tp=2");
  apply_config_override(c, "mla_tp_mode=tpla");
  apply_config_override(c, "tpla_seed=18446744073709551615");  // the whole uint64 range
  apply_config_override(c, "max_context=1000");
  CHECK(c.runner.latent_prefill.mode == LatentPrefill::kAbsorbed);
  CHECK(c.runner.latent_prefill.scratch_bytes == 1048576);
  CHECK(c.runner.device == 3);
  CHECK(rank_device(c.runner, 0) == 3);
  CHECK(rank_device(c.runner, 1) == 4);
  CHECK(c.runner.mla_tp_mode == LatentTpMode::kTpla);
  CHECK(c.runner.tpla.seed == 18446744073709551615ULL);
  CHECK(engine_options(c).max_context == 1000);
  const ServerConfig back = parse_server_config(to_json(c), "/");
  CHECK(back.runner == c.runner);
  CHECK(to_json(back) == to_json(c));
}

TEST_CASE("the runner config's JSON holds every field", "[engine][config]") {
  RunnerConfig c;
  c.model_dir = "/models/x";
  c.variant = "gla2";
  c.backend = "cuda";
  c.tp = 8;
  c.device = 1;
  c.tp_devices = {1, 1, 2, 2, 3, 3, 4, 4};  // ranks may share a device
  c.mla_tp_mode = LatentTpMode::kTpla;
  c.tpla = TplaOptions{"random", false, 7, 4};
  c.latent_prefill = LatentPrefillOptions{LatentPrefill::kExpanded, 1 << 20};
  c.page_size = 16;
  c.cache_memory_bytes = 1 << 30;
  c.num_pages = 5;
  c.kv_cache = CacheEncoding::kFp8E4M3;
  c.gpu_memory_fraction = 0.75;
  c.cuda_graph_max_batch = 0;
  c.max_context = 512;
  const RunnerConfig back = runner_config_from_json(to_json(c), "/");
  CHECK(back == c);
  // Each field on its own: a field the JSON dropped would come back as its default.
  RunnerConfig plain;
  plain.model_dir = "/models/x";
  const nlohmann::json full = to_json(c), base = to_json(plain);
  size_t differing = 0;
  for (const auto& [key, value] : full.items()) {
    if (base.at(key) == value) continue;
    ++differing;
    nlohmann::json j = base;
    j[key] = value;
    INFO(key);
    CHECK_FALSE(runner_config_from_json(j, "/") == plain);
  }
  CHECK(differing == full.size() - 2);  // all but model_dir and the default kernel options
  CHECK_THROWS_WITH(runner_config_from_json({{"model_dir", "/m"}, {"port", 1}}, "/"),
                    Catch::Contains("unknown config key 'port'"));
  CHECK_THROWS_WITH(runner_config_from_json({{"model_dir", "/m"}, {"tp", 0}}, "/"),
                    Catch::Contains("'tp'"));
}

TEST_CASE("tokenizer_dir resolves like model_dir, round-trips and must hold tokenizer files",
          "[engine][config]") {
  namespace fs = std::filesystem;
  const fs::path assets = fs::path(MLRA_SOURCE_DIR) / "models" / "assets" / "gpt2";
  const fs::path source = fs::path(MLRA_SOURCE_DIR);
  CHECK(parse_server_config({{"model_dir", "m"}}, "/base").tokenizer_dir.empty());
  CHECK(parse_server_config({{"model_dir", "m"}, {"chat_template", "../t/chat.json"}}, "/base/c")
            .chat_template == "/base/t/chat.json");

  // Relative to the config file's folder; absolute stays; the JSON round trip keeps it.
  const ServerConfig c = parse_server_config(
      {{"model_dir", "m"}, {"tokenizer_dir", "../models/assets/gpt2"}}, source / "configs");
  CHECK(c.tokenizer_dir == assets.lexically_normal().string());
  const ServerConfig back = parse_server_config(to_json(c), "/elsewhere");
  CHECK(back.tokenizer_dir == c.tokenizer_dir);
  CHECK(to_json(back) == to_json(c));

  // A folder without the files, a missing folder and a file: one line naming the key and path.
  const fs::path empty = fs::temp_directory_path() / ("mlra_tokdir_" + std::to_string(::getpid()));
  fs::create_directories(empty);
  auto error_with = [](const nlohmann::json& dir) {
    return error_of({{"model_dir", "/m"}, {"tokenizer_dir", dir}});
  };
  for (const auto& [dir, says] : std::vector<std::pair<std::string, std::string>>{
           {empty.string(), "holds no tokenizer files"},
           {(empty / "missing").string(), "is not a folder"},
           {(assets / "encoder.json").string(), "is not a folder"}}) {
    const std::string e = error_with(dir);
    INFO(dir);
    CHECK(e.find("config key 'tokenizer_dir': '" + dir + "' " + says) != std::string::npos);
    CHECK(e.find('\n') == std::string::npos);
  }
  CHECK(error_with(1).find("'tokenizer_dir'") != std::string::npos);  // wrong type
  CHECK(error_with("").empty());                                      // empty: the default
  fs::remove_all(empty);

  // An override resolves against the working directory and is validated at once.
  ServerConfig o = parse_server_config({{"model_dir", "/m"}}, "/");
  apply_config_override(o, "tokenizer_dir=" + assets.string());
  CHECK(o.tokenizer_dir == assets.string());
  CHECK_THROWS_WITH(apply_config_override(o, "tokenizer_dir=/nonexistent/tokenizer"),
                    Catch::Contains("'tokenizer_dir'"));
}

TEST_CASE("the tokenizer folder: the configured one, else the model's own, else the installed one",
          "[server][config]") {
  namespace fs = std::filesystem;
  const fs::path model =
      fs::temp_directory_path() / ("mlra_tokmodel_" + std::to_string(::getpid()));
  fs::remove_all(model);
  fs::create_directories(model);
  CHECK(tokenizer_dir_for("", model) == default_tokenizer_dir());
  CHECK(tokenizer_dir_for("/chosen", model) == "/chosen");
  // Any tokenizer file marks the checkpoint's own tokenizer; an incomplete set then fails to load
  // with a message naming the folder rather than falling back to GPT-2 silently.
  std::ofstream(model / "vocab.json") << "{}";
  CHECK(tokenizer_dir_for("", model) == model);
  CHECK_THROWS_WITH(Gpt2Tokenizer::load(tokenizer_dir_for("", model)),
                    Catch::Contains(model.string()));
  CHECK(tokenizer_dir_for("/chosen", model) == "/chosen");
  fs::remove_all(model);
}
