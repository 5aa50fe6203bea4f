// `mlra-serve perplexity`: held-out perplexity of a checkpoint on a release-format token file or
// a UTF-8 text file, computed through the same runner the server uses (any backend, TP degree,
// TPLA mode, kv_cache_dtype) — the end-to-end accuracy check against a training script's own
// evaluation.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

namespace mlra {

void register_perplexity_command(CLI::App& app, int& exit_code);

// The evaluation tokens: a release-format token file, or a UTF-8 text file GPT-2 tokenized with
// the tokenizer serve would load (tokenizer_dir_for: the configured tokenizer_dir, else the
// model's, else the installed GPT-2 files), EOT first and every literal "<|endoftext|>" an EOT
// (the documents of a token file each start with EOT). Exactly one of the two paths is non-empty.
// Throws std::runtime_error naming the file (unreadable, not UTF-8, no tokens).
std::vector<int32_t> evaluation_tokens(const std::string& token_file, const std::string& text_file,
                                       const std::string& tokenizer_dir,
                                       const std::filesystem::path& model_dir);

}  // namespace mlra
