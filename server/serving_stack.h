// Everything `serve` and `generate` build from a ServerConfig before any request arrives: the
// GPT-2 tokenizer, the ModelRunner (in-process or one worker per device) and the Engine over
// it. Invariant: the engine is declared after the tokenizer, so it is destroyed first (it
// holds a reference to the tokenizer).
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "engine/engine.h"
#include "engine/server_config.h"
#include "models/gpt2_tokenizer.h"
#include "server/proto_convert.h"

namespace mlra {

struct ServingStack {
  std::unique_ptr<Gpt2Tokenizer> tokenizer;
  std::unique_ptr<Engine> engine;
  ServingLabels labels;
};

// Loads the tokenizer (tokenizer_dir_for), loads the model and starts the engine thread,
// reporting to `metrics` if given. Throws on any failure.
ServingStack build_serving_stack(const ServerConfig& config,
                                 std::shared_ptr<EngineMetrics> metrics = nullptr);

// The tokenizer folder to load: `configured` (the config key tokenizer_dir) when set, else
// `model_dir` when it ships tokenizer files (any of encoder.json, vocab.json, tokenizer.json;
// Gpt2Tokenizer::load then names what is missing), else the GPT-2 files installed with the
// binary (default_tokenizer_dir).
std::filesystem::path tokenizer_dir_for(const std::string& configured,
                                        const std::filesystem::path& model_dir);

// configs/default.json: in the working directory, else in the source or install tree that holds
// this executable. Empty path when none is found.
std::filesystem::path find_default_config();

// The config a command starts from before its overrides: `file`, or configs/default.json when
// `file` is empty (serve, generate and perplexity alike). Throws ConfigError when neither exists.
ServerConfig load_config_or_default(const std::string& file);

}  // namespace mlra
