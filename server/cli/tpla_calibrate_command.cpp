// tpla-calibrate: inputs are validated first (one-line errors, exit 2), then the model runs and
// the transform file is written; a JSON summary with each layer's energy per slice goes to
// stdout.
#include "server/cli/tpla_calibrate_command.h"

#include <algorithm>
#include <fstream>
#include <iterator>
#include <memory>
#include <sstream>
#include <stdexcept>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include "engine/perplexity.h"
#include "models/checkpoint.h"
#include "models/gpt2_tokenizer.h"
#include "models/latent_calibration.h"
#include "models/model_config.h"
#include "models/tpla.h"
#include "models/variant_inference.h"
#include "server/serving_stack.h"

namespace mlra {
namespace {

struct InputError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::string read_text(const std::string& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw InputError("cannot read calibration text " + file);
  std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  if (in.bad()) throw InputError("cannot read calibration text " + file);
  return text;
}

Variant mla_variant(const TplaCalibrateArgs& a) {
  if (!a.attention.empty()) {
    const auto v = parse_variant(a.attention);
    if (!v) throw InputError("unknown attention variant '" + a.attention + "'");
    if (v->kind != AttentionKind::kMla)
      throw InputError("tpla calibration is for MLA checkpoints, not " + v->name());
    return *v;
  }
  const auto ckpt = Checkpoint::open(a.model_dir);
  const InferredVariant found = infer_variant(*ckpt);
  if (found.variant.kind != AttentionKind::kMla)
    throw InputError(a.model_dir + " is not an MLA checkpoint: its tensors are " +
                     found.variant.name() + " (" + found.evidence + ")");
  return found.variant;
}

// Text files first (GPT-2 tokenized, each on its own), then token files, in the order given.
std::vector<int32_t> calibration_tokens(const TplaCalibrateArgs& a) {
  std::vector<int32_t> tokens;
  if (!a.text_files.empty()) {
    if (!a.tokenizer_dir.empty() && !has_tokenizer_files(a.tokenizer_dir))
      throw InputError("--tokenizer-dir " + a.tokenizer_dir +
                       " holds no tokenizer files (encoder.json + vocab.bpe, vocab.json + "
                       "merges.txt, or tokenizer.json)");
    const Gpt2Tokenizer tok = Gpt2Tokenizer::load(tokenizer_dir_for(a.tokenizer_dir, a.model_dir));
    for (const auto& file : a.text_files) {
      const auto ids = tok.encode(read_text(file));
      if (ids.empty()) throw InputError("calibration text " + file + " is empty");
      tokens.insert(tokens.end(), ids.begin(), ids.end());
    }
  }
  for (const auto& file : a.token_files) {
    std::vector<int32_t> ids;
    try {
      ids = read_token_file(file);
    } catch (const std::exception& e) {
      throw InputError(e.what());
    }
    if (ids.empty()) throw InputError("token file " + file + " holds no token");
    tokens.insert(tokens.end(), ids.begin(), ids.end());
  }
  if (tokens.empty()) throw InputError("no calibration input: give --text and/or --tokens");
  return tokens;
}

// Share of the second moment's trace each of `slices` contiguous column blocks of u carries.
std::vector<double> slice_energy(const std::vector<double>& m, const std::vector<float>& u,
                                 int64_t n, int slices) {
  std::vector<double> share(size_t(slices), 0.0);
  double total = 0;
  for (int64_t k = 0; k < n; ++k) {
    double e = 0;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j)
        e += double(u[size_t(i * n + k)]) * m[size_t(i * n + j)] * u[size_t(j * n + k)];
    share[size_t(k / (n / slices))] += e;
    total += e;
  }
  for (auto& s : share) s = total > 0 ? s / total : 0.0;
  return share;
}

}  // namespace

int run_tpla_calibrate(const TplaCalibrateArgs& a, std::FILE* err) {
  auto fail = [err](int code, const std::string& why) {
    fmt::print(err, "mlra-serve tpla-calibrate: {}\n", why);
    return code;
  };
  Variant variant;
  ModelConfig config;
  std::vector<int32_t> tokens;
  SliceOrder order = SliceOrder::kDescending;
  CalibrationOptions options;
  try {
    if (a.order == "interleaved")
      order = SliceOrder::kInterleaved;
    else if (a.order != "descending")
      throw InputError("--order must be descending or interleaved");
    if (order == SliceOrder::kInterleaved && a.slices < 2)
      throw InputError("--order interleaved needs --slices (the TP degree it is for, >= 2)");
    if (a.out.empty()) throw InputError("--out is required");
    const auto out_dir = std::filesystem::absolute(a.out).parent_path();
    if (!std::filesystem::is_directory(out_dir))
      throw InputError("output folder " + out_dir.string() + " does not exist");
    variant = mla_variant(a);
    config = load_model_config(std::filesystem::path(a.model_dir) / "config.json", variant);
    const int64_t n = config.latent_dim();
    if (order == SliceOrder::kInterleaved && n % a.slices != 0)
      throw InputError(
          fmt::format("the latent ({} values) does not split into {} slices", n, a.slices));
    options.max_tokens = a.max_tokens;
    options.window =
        a.window > 0 ? a.window : int32_t(config.block_size > 0 ? config.block_size : 512);
    if (config.block_size > 0 && options.window > config.block_size)
      throw InputError(fmt::format("--window {} exceeds the model's block_size {}", options.window,
                                   config.block_size));
    tokens = calibration_tokens(a);
  } catch (const std::exception& e) {
    return fail(2, e.what());
  }
  try {
    const LatentMoments moments = collect_latent_moments(a.model_dir, variant, tokens, options);
    const int64_t n = moments.width(), used = moments.count(0);
    std::vector<std::vector<float>> per_layer;
    std::vector<std::string> energy;
    for (int64_t l = 0; l < moments.layers(); ++l) {
      const std::vector<double> m = moments.second_moment(l);
      per_layer.push_back(slice_ordered_pca(m, n, order, std::max(a.slices, 1)));
      std::vector<std::string> by_tp;
      for (int s : {2, 4})
        if (n % s == 0)
          by_tp.push_back(fmt::format("\"tp{}\": [{:.4f}]", s,
                                      fmt::join(slice_energy(m, per_layer.back(), n, s), ", ")));
      energy.push_back("{" + fmt::format("{}", fmt::join(by_tp, ", ")) + "}");
    }
    save_transform_file(a.out, per_layer, n);
    fmt::print(
        "{{\"out\": \"{}\", \"variant\": \"{}\", \"layers\": {}, \"width\": {}, \"tokens\": {}, "
        "\"window\": {}, \"order\": \"{}\", \"slices\": {}, \"slice_energy\": [{}]}}\n",
        a.out, variant.name(), moments.layers(), n, used, options.window, a.order, a.slices,
        fmt::join(energy, ", "));
    return 0;
  } catch (const std::invalid_argument& e) {
    return fail(2, e.what());
  } catch (const std::exception& e) {
    return fail(1, e.what());
  }
}

void register_tpla_calibrate_command(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<TplaCalibrateArgs>();
  CLI::App* cmd = app.add_subcommand(
      "tpla-calibrate",
      "PCA transform file for TPLA from calibration text through an MLA checkpoint");
  cmd->add_option("--model-dir", args->model_dir, "MLA checkpoint folder")->required();
  cmd->add_option("--attention", args->attention, "variant (default: inferred from the tensors)");
  cmd->add_option("--text", args->text_files, "calibration text file (repeatable)");
  cmd->add_option("--tokenizer-dir", args->tokenizer_dir,
                  "tokenizer folder for --text (default: the model folder's own, else GPT-2)");
  cmd->add_option("--tokens", args->token_files, "calibration token file, .bin (repeatable)");
  cmd->add_option("--out", args->out, "transform file to write")->required();
  cmd->add_option("--max-tokens", args->max_tokens, "use at most this many tokens")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--window", args->window, "tokens per forward (default: block_size)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--order", args->order, "component order over slices: descending | interleaved");
  cmd->add_option("--slices", args->slices, "interleaved: slice count (TP degree) it is for")
      ->check(CLI::NonNegativeNumber);
  cmd->callback([args, &exit_code] { exit_code = run_tpla_calibrate(*args); });
}

}  // namespace mlra
