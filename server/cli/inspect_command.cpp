// inspect: load (or just parse) a model and report what serving it costs per GPU. The cache
// table comes from models/cache_shape, the same function the TP runtime sizes its pages with.
#include "server/cli/inspect_command.h"

#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <stdexcept>

#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "models/cache_shape.h"
#include "models/model_loader.h"
#include "models/variant_inference.h"

namespace mlra {
namespace {

constexpr int kTpDegrees[] = {1, 2, 4, 8};
constexpr int64_t kCacheBytesPerValue = 2;  // the CUDA backend's plain cache: bf16

std::string span_text(int64_t lo, int64_t hi) {
  return lo == hi ? std::to_string(lo) : fmt::format("{}-{}", lo, hi);
}

std::string dh_text(int64_t lo, int64_t hi) {
  const auto f = [](int64_t v) { return fmt::format("{:g}", double(v) / 128.0); };
  return lo == hi ? f(lo) : f(lo) + "-" + f(hi);
}

void print_dims(const ModelConfig& c, std::ostream& out) {
  out << fmt::format(
      "dims        n_layer {}, n_head {}, n_embd {}, intermediate_size {}, vocab {}, block {}\n",
      c.n_layer, c.n_head, c.n_embd, c.intermediate_size, c.vocab_size, c.block_size);
  if (c.variant.is_latent())
    out << fmt::format(
        "attention   q_lora_rank {}, kv_lora_rank {} ({} latent(s) x {}), qk_nope {}, "
        "qk_rope {}, q_scale {:.5f}, kv_scale {:.5f}, softmax_scale {:.7f}\n",
        c.q_lora_rank, c.kv_lora_rank, c.num_latents(), c.latent_dim(), c.qk_nope_head_dim,
        c.qk_rope_head_dim, c.q_scale(), c.kv_scale(), c.softmax_scale());
  else
    out << fmt::format(
        "attention   head_dim {}, kv heads {}{}{}, softmax_scale {:.7f}\n", c.head_dim,
        c.num_kv_heads(), c.share_q_dim ? fmt::format(", share_q_dim {}", c.share_q_dim) : "",
        c.rank ? fmt::format(", rank {}, q_rank {}", c.rank, c.q_rank) : "", c.softmax_scale());
  out << fmt::format("parameters  {} (tied embedding counted once)\n", c.param_count());
}

// Per GPU: values, bf16 bytes and d_h per token per layer, bf16 bytes per token; then the FP8
// cache (kv_cache_dtype fp8_e4m3) bytes per token per layer and per token, and how many times
// the tokens a bf16 cache holds fit in the same memory (widest rank of each).
void print_cache_table(const ModelConfig& c, std::ostream& out) {
  out << fmt::format(
      "kv cache    per token per layer per GPU, bf16 and fp8_e4m3 ({} layers; 1 d_h = 128 "
      "values)\n",
      c.n_layer);
  out << fmt::format("  {:<5} {:>9} {:>11} {:>8} {:>17} {:>11} {:>17} {:>9}\n", "TP", "values",
                     "bytes", "d_h", "bytes/token", "fp8 bytes", "fp8 bytes/token", "fp8 x");
  for (int tp : kTpDegrees) {
    if (auto why = tp_refusal(c, tp)) {
      out << fmt::format("  TP {:<2} refused: {}\n", tp, *why);
      continue;
    }
    const CacheWidth w = cache_values_per_rank(c, tp);
    const CacheWidth f = cache_row_bytes_per_rank(c, tp, CacheEncoding::kFp8E4M3, 0);
    const int64_t b = kCacheBytesPerValue;
    out << fmt::format("  TP {:<2} {:>9} {:>11} {:>8} {:>17} {:>11} {:>17} {:>9.3f}\n", tp,
                       span_text(w.min_values, w.max_values),
                       span_text(w.min_values * b, w.max_values * b),
                       dh_text(w.min_values, w.max_values),
                       span_text(w.min_values * b * c.n_layer, w.max_values * b * c.n_layer),
                       span_text(f.min_values, f.max_values),
                       span_text(f.min_values * c.n_layer, f.max_values * c.n_layer),
                       double(w.max_values * b) / double(f.max_values));
  }
}

Variant variant_from_name(const std::string& name) {
  auto v = parse_variant(name);
  if (!v) throw std::invalid_argument("unknown attention variant '" + name + "'");
  return *v;
}

std::string config_dtype(const std::filesystem::path& config_json) {
  std::ifstream in(config_json);
  const auto j = nlohmann::json::parse(in, nullptr, false);
  if (j.is_object() && j.contains("torch_dtype") && j["torch_dtype"].is_string())
    return j["torch_dtype"].get<std::string>() + " (config torch_dtype)";
  return "unknown (config has no torch_dtype)";
}

}  // namespace

void run_inspect(const InspectOptions& o, std::ostream& out) {
  if (o.config_only) {
    if (o.attention.empty())
      throw std::invalid_argument(
          "--config-only needs --attention: config.json never names the variant");
    const ModelConfig c = load_model_config(o.path, variant_from_name(o.attention));
    out << fmt::format("variant     {}\n", c.variant.name());
    out << fmt::format("source      {} (config only, no weights read)\n", o.path.string());
    print_dims(c, out);
    out << fmt::format("dtype       {}\n", config_dtype(o.path));
    print_cache_table(c, out);
    return;
  }
  Variant variant;
  std::string how = "configured";
  if (o.attention.empty()) {
    const auto found = infer_variant(*Checkpoint::open(o.path));
    variant = found.variant;
    how = "inferred from " + found.evidence + "; no_scale siblings cannot be told apart";
  } else {
    variant = variant_from_name(o.attention);
  }
  const LoadedModel m = load_model(o.path, variant);
  const Checkpoint& ck = *m.checkpoint;
  std::map<std::string, size_t> dtypes;
  for (const auto& n : ck.names()) ++dtypes[dtype_name(ck.info(n).dtype)];
  std::string dtype_list;
  for (const auto& [d, n] : dtypes)
    dtype_list += fmt::format("{}{} ({} tensors)", dtype_list.empty() ? "" : ", ", d, n);
  out << fmt::format("variant     {} ({})\n", variant.name(), how);
  out << fmt::format("source      {}: {}, {} file(s), {} tensors, {:.3f} GB\n", o.path.string(),
                     ck.format(), ck.files().size(), ck.names().size(), ck.total_bytes() / 1e9);
  print_dims(m.config, out);
  out << fmt::format("dtype       {}\n", dtype_list);
  print_cache_table(m.config, out);
}

void register_inspect_command(CLI::App& app, int& exit_code) {
  auto opts = std::make_shared<InspectOptions>();
  CLI::App* cmd =
      app.add_subcommand("inspect", "Print variant, dims, parameters and per-GPU cache table");
  cmd->add_option("path", opts->path, "checkpoint folder (or config.json with --config-only)")
      ->required();
  cmd->add_flag("--config-only", opts->config_only, "read only a config.json, no weights");
  cmd->add_option("--attention", opts->attention,
                  "attention variant (mha, gqa, mqa, gta, mfa, tpa, mla, gla2, gla4, mlra2, mlra4, "
                  "*_gated, *_no_scale); inferred from the checkpoint when omitted");
  cmd->callback([opts, &exit_code] {
    try {
      run_inspect(*opts, std::cout);
      exit_code = 0;
    } catch (const std::exception& e) {
      std::cerr << "inspect: " << e.what() << "\n";
      exit_code = 1;
    }
  });
}

}  // namespace mlra
