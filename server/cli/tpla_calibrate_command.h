// `mlra-serve tpla-calibrate`: runs calibration text and/or tokens through an MLA checkpoint
// (CPU, replicated latent), computes a PCA transform per layer from the cached latents' second
// moments and writes the transform file that `tpla_transform=<file>` then names
// (models/latent_calibration.h, file format in models/tpla.h).
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace mlra {

struct TplaCalibrateArgs {
  std::string model_dir, attention, out;
  std::string tokenizer_dir;             // for --text; empty: as serve picks it (tokenizer_dir_for)
  std::vector<std::string> text_files;   // UTF-8 text, GPT-2 tokenized
  std::vector<std::string> token_files;  // release .bin token files
  int64_t max_tokens = 65536;
  int32_t window = 0;                // 0: the model's block_size (512 if it has none)
  std::string order = "descending";  // descending | interleaved
  int slices = 0;                    // interleaved: the slice count it is ordered for
};

// Exit status: 0 written, 2 bad input (one line on `err`), 1 failure while running.
int run_tpla_calibrate(const TplaCalibrateArgs& args, std::FILE* err = stderr);

void register_tpla_calibrate_command(CLI::App& app, int& exit_code);

}  // namespace mlra
