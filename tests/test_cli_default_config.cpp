// `mlra-serve generate` and `perplexity` with no model arguments start from configs/default.json,
// as `serve` does: the working directory's, else the one of the source tree holding the binary.
// The tokenizer_dir key (flag, override, config file) picks the tokenizer those commands load.
// Runs the real binary as a subprocess ([process]).
#include <catch2/catch.hpp>

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

using namespace std::string_literals;
namespace fs = std::filesystem;

namespace {

struct Run {
  int code = -1;
  std::string output;  // stdout and stderr together
};

// Runs `mlra-serve <args>` in `cwd` through the shell; args are plain words (no quoting needed).
Run run_in(const fs::path& cwd, const std::string& args) {
  const std::string binary = std::string(MLRA_BINARY_DIR) + "/server/mlra-serve";
  const std::string command =
      "cd '" + cwd.string() + "' && '" + binary + "' " + args + " 2>&1; echo \"exit=$?\"";
  FILE* pipe = ::popen(command.c_str(), "r");
  REQUIRE(pipe != nullptr);
  Run r;
  char buffer[4096];
  for (size_t n; (n = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0;) r.output.append(buffer, n);
  ::pclose(pipe);
  const size_t at = r.output.rfind("exit=");
  REQUIRE(at != std::string::npos);
  r.code = std::stoi(r.output.substr(at + 5));
  r.output.resize(at);
  return r;
}

// A scratch working directory, removed again at the end of the test.
struct ScratchDir {
  fs::path path;
  explicit ScratchDir(const std::string& name)
      : path(fs::temp_directory_path() / (name + "_" + std::to_string(::getpid()))) {
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~ScratchDir() { fs::remove_all(path); }
};

// A token file in the release format: 256 x int32 header (magic, version, count), uint16 tokens.
void write_tokens(const fs::path& file, int n, int vocab) {
  std::vector<int32_t> header(256, 0);
  header[0] = 20240520;
  header[1] = 1;
  header[2] = n;
  std::vector<uint16_t> tokens(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) tokens[size_t(i)] = uint16_t((i * 37 + 11) % vocab);
  std::ofstream out(file, std::ios::binary);
  out.write(reinterpret_cast<const char*>(header.data()), 1024);
  out.write(reinterpret_cast<const char*>(tokens.data()), std::streamsize(tokens.size() * 2));
}

nlohmann::json last_json_line(const std::string& text) {
  const size_t end = text.find_last_not_of('\n');
  const size_t begin = text.rfind('\n', end);
  return nlohmann::json::parse(text.substr(begin == std::string::npos ? 0 : begin + 1), nullptr,
                               false);
}

}  // namespace

TEST_CASE("generate and perplexity read the working directory's configs/default.json",
          "[cli][process]") {
  ScratchDir cwd("mlra_cli_default");
  const fs::path model = fs::path(MLRA_TEST_DATA) / "tiny" / "gqa";
  fs::create_directories(cwd.path / "configs");
  // A variant the built-in defaults never name: the output shows this file was read.
  std::ofstream(cwd.path / "configs" / "default.json") << nlohmann::json{
      {"model_dir", model.string()},
      {"variant", "gqa"},
      {"page_size", 16},
      {"num_pages", 64}}.dump();
  write_tokens(cwd.path / "tokens.bin", 40, 512);

  const Run gen = run_in(cwd.path, "generate --prompt a -n 3 -t 0");
  INFO(gen.output);
  CHECK(gen.code == 0);
  CHECK(gen.output.find("loading gqa from " + model.string()) != std::string::npos);
  CHECK(gen.output.find("completion_tokens=3") != std::string::npos);

  const Run ppl = run_in(cwd.path, "perplexity --tokens tokens.bin --context 16 --max-windows 2");
  INFO(ppl.output);
  CHECK(ppl.code == 0);
  const nlohmann::json result = last_json_line(ppl.output);
  REQUIRE(result.is_object());
  CHECK(result["variant"] == "gqa");
  CHECK(result["windows"] == 2);
  CHECK(result["tokens"] == 32);
  CHECK(result["ppl"].get<double>() > 1.0);
}

TEST_CASE("generate and perplexity fall back to the source tree's configs/default.json",
          "[cli][process]") {
  ScratchDir cwd("mlra_cli_tree_default");  // no configs/ here
  const fs::path model = (fs::path(MLRA_SOURCE_DIR) / "models" / "default").lexically_normal();
  write_tokens(cwd.path / "tokens.bin", 20, 50257);

  const Run gen = run_in(cwd.path, "generate --prompt Hello -n 2 -t 0");
  INFO(gen.output);
  CHECK(gen.code == 0);
  CHECK(gen.output.find("loading mlra4 from " + model.string()) != std::string::npos);
  CHECK(gen.output.find("completion_tokens=2") != std::string::npos);

  const Run ppl = run_in(cwd.path, "perplexity --tokens tokens.bin --context 8 --max-windows 1");
  INFO(ppl.output);
  CHECK(ppl.code == 0);
  const nlohmann::json result = last_json_line(ppl.output);
  REQUIRE(result.is_object());
  CHECK(result["variant"] == "mlra4");
  CHECK(result["tokens"] == 8);

  // An explicit file that is missing is an error naming it, not a silent fallback.
  const Run missing = run_in(cwd.path, "generate --config nowhere.json --prompt a");
  CHECK(missing.code == 2);
  CHECK(missing.output.find("nowhere.json") != std::string::npos);
}

TEST_CASE("serve and generate load the tokenizer the config key tokenizer_dir names",
          "[cli][process]") {
  ScratchDir cwd("mlra_cli_tokenizer_dir");
  const fs::path source = fs::path(MLRA_SOURCE_DIR).lexically_normal();
  const fs::path assets = source / "models" / "assets" / "gpt2";
  fs::create_directories(cwd.path / "tok");
  for (const char* file : {"encoder.json", "vocab.bpe"}) fs::copy(assets / file, cwd.path / "tok");

  // Without the key: the default model ships no tokenizer, so the source tree's GPT-2 files.
  const Run plain = run_in(cwd.path, "generate --prompt Hello -n 2 -t 0");
  INFO(plain.output);
  CHECK(plain.code == 0);
  CHECK(plain.output.find("tokenizer: " + assets.string() + " (50257 ids)") != std::string::npos);

  // The flag, the override and a config file (relative to its folder) all name the copy.
  const std::string copy = "tokenizer: " + (cwd.path / "tok").string() + " (50257 ids)";
  for (const std::string& args :
       {"generate --tokenizer-dir tok --prompt Hello -n 2 -t 0"s,
        "generate --set tokenizer_dir=" + (cwd.path / "tok").string() + " --prompt Hello -n 2 -t 0",
        "generate --config configs/tok.json --prompt Hello -n 2 -t 0"s}) {
    if (args.find("configs/tok.json") != std::string::npos) {
      fs::create_directories(cwd.path / "configs");
      std::ofstream(cwd.path / "configs" / "tok.json") << nlohmann::json{
          {"model_dir", (source / "models" / "default").string()},
          {"tokenizer_dir", "../tok"}}.dump();
    }
    const Run r = run_in(cwd.path, args);
    INFO(args << "\n" << r.output);
    CHECK(r.code == 0);
    CHECK(r.output.find(copy) != std::string::npos);
    CHECK(r.output.find("completion_tokens=2") != std::string::npos);
  }

  // A folder without tokenizer files: one line naming the key, exit 2, before any model loads.
  fs::create_directories(cwd.path / "empty");
  for (const char* command : {"generate --prompt Hello", "serve --port 0"}) {
    const Run bad = run_in(cwd.path, command + " --tokenizer-dir empty"s);
    INFO(command << "\n" << bad.output);
    CHECK(bad.code == 2);
    CHECK(bad.output.find("config key 'tokenizer_dir': '" + (cwd.path / "empty").string() +
                          "' holds no tokenizer files") != std::string::npos);
    CHECK(std::count(bad.output.begin(), bad.output.end(), '\n') == 1);
  }
}
