// KernelOptions and the server config's "kernels" object: defaults are the measured winners,
// every field round-trips through JSON, unknown keys and out-of-range or mistyped values are
// errors naming "kernels.<key>", and the range check the CUDA backend applies agrees.
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include "engine/kernel_options_json.h"
#include "kernels/kernel_options.h"
#include "models/model_config.h"

using namespace mlra;
using nlohmann::json;

namespace {

std::string error_of(const json& j) {
  try {
    parse_kernel_options(j);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("kernel options: an empty object gives the defaults", "[kernel_options]") {
  const KernelOptions o = parse_kernel_options(json::object());
  CHECK(o == KernelOptions{});
  // The measured winner: every linear of 1..8 rows on our GEMV (FMA at one row, tensor cores at
  // 2..8).
  CHECK(o.gemv_max_rows == KernelOptions::kMaxGemvRows);
  CHECK(o.gemv_max_rows == 8);
  CHECK(o.kv_split_per_sm == 0);
  CHECK(o.mlp_block == 0);    // the composed MLP half until the fused kernel is measured
  CHECK(o.attn_block == 0);   // the composed attention front until the fused kernel is measured
  CHECK(o.gemv_k_tail == 0);  // K % 8 != 0 on cuBLAS until the K-tail GEMV is measured
  CHECK(kernel_options_error(o).empty());
}

TEST_CASE("kernel options: every field round-trips through JSON", "[kernel_options]") {
  const json defaults = to_json(KernelOptions{});
  CHECK(defaults == json{{"gemv_max_rows", 8},
                         {"latent_uk_t", 0},
                         {"kv_split_per_sm", 0},
                         {"mlp_block", 0},
                         {"attn_block", 0},
                         {"gemv_k_tail", 0}});
  for (int rows = 0; rows <= KernelOptions::kMaxGemvRows; ++rows)
    for (int split = 0; split <= KernelOptions::kMaxKvSplitPerSm; ++split)
      for (int bits = 0; bits < 16; ++bits) {  // mlp_block, gemv_k_tail, latent_uk_t, attn_block
        KernelOptions o;
        o.gemv_max_rows = rows;
        o.kv_split_per_sm = split;
        o.mlp_block = bits & 1;
        o.gemv_k_tail = (bits >> 1) & 1;
        o.latent_uk_t = (bits >> 2) & 1;
        o.attn_block = (bits >> 3) & 1;
        const json j = to_json(o);
        CHECK(j.size() == defaults.size());
        CHECK(parse_kernel_options(j) == o);
        CHECK(parse_kernel_options(json::parse(j.dump())) == o);  // through text, as workers do
      }
  // A partial object sets its keys and leaves the rest at their defaults.
  const KernelOptions partial = parse_kernel_options(json{{"kv_split_per_sm", 2}});
  CHECK(partial.kv_split_per_sm == 2);
  CHECK(partial.gemv_max_rows == KernelOptions{}.gemv_max_rows);
  const KernelOptions rows1 = parse_kernel_options(json{{"gemv_max_rows", 1}});
  CHECK(rows1.gemv_max_rows == 1);
  CHECK(rows1.kv_split_per_sm == KernelOptions{}.kv_split_per_sm);
  const KernelOptions fused = parse_kernel_options(json{{"mlp_block", 1}});
  CHECK(fused.mlp_block == 1);
  CHECK(fused.gemv_max_rows == KernelOptions{}.gemv_max_rows);
  const KernelOptions tail = parse_kernel_options(json{{"gemv_k_tail", 1}});
  CHECK(tail.gemv_k_tail == 1);
  CHECK(tail.mlp_block == KernelOptions{}.mlp_block);
  const KernelOptions front = parse_kernel_options(json{{"attn_block", 1}});
  CHECK(front.attn_block == 1);
  CHECK(front.mlp_block == KernelOptions{}.mlp_block);
}

TEST_CASE("kernel options: unknown keys and wrong shapes are errors naming the key",
          "[kernel_options]") {
  CHECK(error_of(json{{"gemv_rows", 2}}) == "unknown config key 'kernels.gemv_rows'");
  // Switches that lost every measurement are not options; a config naming one (at any value, or
  // beside valid keys) is refused with the key's name.
  for (const char* gone :
       {"pdl", "query_packing", "merge", "latent_kernel", "gemv_mma", "latent_fused_max_tokens",
        "latent_fused_min_units", "latent_fused_tiled", "weight_prefetch_l2"}) {
    CHECK(error_of(json{{gone, 0}}) == std::string("unknown config key 'kernels.") + gone + "'");
    CHECK(error_of(json{{"gemv_max_rows", 8}, {gone, 1}}) ==
          std::string("unknown config key 'kernels.") + gone + "'");
  }
  CHECK(error_of(json::array()) == "config key 'kernels' must be a JSON object");
  CHECK(error_of(json(3)) == "config key 'kernels' must be a JSON object");
  CHECK(error_of(json(nullptr)) == "config key 'kernels' must be a JSON object");
}

TEST_CASE("kernel options: latent_uk_t is 0 or 1, 0 by default", "[kernel_options]") {
  CHECK(KernelOptions{}.latent_uk_t == 0);  // W_UK only until the copy is measured on a GPU
  for (int v = 0; v <= 1; ++v) {
    KernelOptions o;
    o.latent_uk_t = v;
    CHECK(kernel_options_error(o).empty());
    CHECK(parse_kernel_options(to_json(o)) == o);
    const KernelOptions parsed = parse_kernel_options(json{{"latent_uk_t", v}});
    CHECK(parsed.latent_uk_t == v);
    CHECK(parsed.gemv_max_rows == KernelOptions{}.gemv_max_rows);
  }
  for (const json bad : {json(2), json(-1), json(true), json(0.5)})
    CHECK(error_of(json{{"latent_uk_t", bad}}) ==
          "config key 'kernels.latent_uk_t' must be an integer in 0..1, got " + bad.dump());
  KernelOptions o;
  o.latent_uk_t = 2;
  CHECK(kernel_options_error(o) == "latent_uk_t must be 0 or 1");
}

TEST_CASE("kernel options: out-of-range and mistyped values are refused", "[kernel_options]") {
  CHECK(error_of(json{{"gemv_max_rows", 9}}) ==
        "config key 'kernels.gemv_max_rows' must be an integer in 0..8, got 9");
  CHECK(error_of(json{{"gemv_max_rows", -1}}) ==
        "config key 'kernels.gemv_max_rows' must be an integer in 0..8, got -1");
  CHECK(error_of(json{{"kv_split_per_sm", 3}}) ==
        "config key 'kernels.kv_split_per_sm' must be an integer in 0..2, got 3");
  CHECK(error_of(json{{"kv_split_per_sm", 1.5}}) ==
        "config key 'kernels.kv_split_per_sm' must be an integer in 0..2, got 1.5");
  CHECK(error_of(json{{"mlp_block", 2}}) ==
        "config key 'kernels.mlp_block' must be an integer in 0..1, got 2");
  CHECK(error_of(json{{"mlp_block", true}}) ==
        "config key 'kernels.mlp_block' must be an integer in 0..1, got true");
  CHECK(error_of(json{{"attn_block", 2}}) ==
        "config key 'kernels.attn_block' must be an integer in 0..1, got 2");
  CHECK(error_of(json{{"attn_block", -1}}) ==
        "config key 'kernels.attn_block' must be an integer in 0..1, got -1");
  CHECK(error_of(json{{"gemv_k_tail", -1}}) ==
        "config key 'kernels.gemv_k_tail' must be an integer in 0..1, got -1");
  CHECK(error_of(json{{"gemv_max_rows", true}}) ==
        "config key 'kernels.gemv_max_rows' must be an integer in 0..8, got true");
  CHECK(error_of(json{{"gemv_max_rows", "4"}}) ==
        "config key 'kernels.gemv_max_rows' must be an integer in 0..8, got \"4\"");
  CHECK(error_of(json{{"gemv_max_rows", 18446744073709551615ull}}) ==
        "config key 'kernels.gemv_max_rows' must be an integer in 0..8, got 18446744073709551615");
  CHECK(error_of(json{{"gemv_max_rows", 4294967297ll}}) ==
        "config key 'kernels.gemv_max_rows' must be an integer in 0..8, got 4294967297");
  // Edges are accepted.
  CHECK(error_of(json{{"gemv_max_rows", 0}, {"kv_split_per_sm", 2}}).empty());
  CHECK(error_of(json{{"gemv_max_rows", 8}, {"kv_split_per_sm", 0}}).empty());
}

TEST_CASE("kernel options: the backend's range check names the field", "[kernel_options]") {
  KernelOptions o;
  o.gemv_max_rows = 9;
  CHECK(kernel_options_error(o) == "gemv_max_rows must be in 0..8");
  o = KernelOptions{};
  o.kv_split_per_sm = -1;
  CHECK(kernel_options_error(o) == "kv_split_per_sm must be in 0..2 (0: automatic)");
  o.kv_split_per_sm = KernelOptions::kMaxKvSplitPerSm;
  CHECK(kernel_options_error(o).empty());
  o.gemv_max_rows = 0;
  CHECK(kernel_options_error(o).empty());
  o.gemv_max_rows = -1;
  CHECK(kernel_options_error(o) == "gemv_max_rows must be in 0..8");
  o = KernelOptions{};
  o.mlp_block = 2;
  CHECK(kernel_options_error(o) == "mlp_block must be 0 or 1");
  o.mlp_block = 1;
  CHECK(kernel_options_error(o).empty());
  o = KernelOptions{};
  o.attn_block = 2;
  CHECK(kernel_options_error(o) == "attn_block must be 0 or 1");
  o.attn_block = 1;
  CHECK(kernel_options_error(o).empty());
  o = KernelOptions{};
  o.gemv_k_tail = 2;
  CHECK(kernel_options_error(o) == "gemv_k_tail must be 0 or 1");
  o.gemv_k_tail = 1;
  CHECK(kernel_options_error(o).empty());
}
