// [fp8][inspect] FP8 cache sizes of the 2.9B configs: bytes per token per layer per GPU written
// out from the layout rule (quantized values + one float32 scale per group + the bf16 RoPE tail),
// the capacity targets (at the same cache memory, MLA holds >= 1.7x the tokens of bf16, MLRA-4 at
// TP 4 >= 1.4x) and inspect's printed FP8 columns; the pages a rank's cache gets on a GPU at one
// gpu_memory_fraction with either encoding (engine/cache_budget.h, as engine/rank.cpp sizes it).
#include <catch2/catch.hpp>

#include <sstream>

#include "engine/cache_budget.h"
#include "models/cache_shape.h"
#include "server/cli/inspect_command.h"

using namespace mlra;
using Catch::Matchers::Contains;

namespace {

std::filesystem::path config_path(const char* dir) {
  return std::filesystem::path(MLRA_SOURCE_DIR) / "configs" / "2.9b" / dir / "config.json";
}

ModelConfig config(const char* dir, const char* variant) {
  return load_model_config(config_path(dir), *parse_variant(variant));
}

}  // namespace

TEST_CASE("fp8 cache bytes per token of the 2.9B models", "[fp8][inspect]") {
  struct Row {
    const char* dir;
    const char* variant;
    int tp;
    int64_t bytes;  // widest rank, per token per layer
  };
  const Row rows[] = {
      {"mla", "mla", 1, 512 + 4 + 128},        // one latent of 512, k_pe 64
      {"mla", "mla", 4, 512 + 4 + 128},        // replicated latent
      {"gla_2", "gla2", 2, 256 + 4 + 128},     // one latent of 256 per rank
      {"mlra_4", "mlra4", 1, 512 + 16 + 128},  // four latents of 128
      {"mlra_4", "mlra4", 4, 128 + 4 + 128},   // one latent per rank
      {"gqa", "gqa", 1, 2 * 6 * (128 + 4)},    // K and V of 6 KV heads
      {"gqa", "gqa", 8, 2 * 2 * (128 + 4)},    // two KV heads on the widest rank
      {"gta", "gta", 1, 6 * (128 + 4) + 128},  // [s|u] of 6 KV heads, rope key r bf16
      {"mfa", "mfa", 2, 2 * (256 + 4)},        // one shared K/V head of 256
  };
  for (const Row& r : rows) {
    INFO(r.dir << " TP " << r.tp);
    const ModelConfig c = config(r.dir, r.variant);
    CHECK(cache_row_bytes_per_rank(c, r.tp, CacheEncoding::kFp8E4M3, 2).max_values == r.bytes);
    CHECK(cache_row_bytes_per_rank(c, r.tp, CacheEncoding::kPlain, 2).max_values ==
          2 * cache_values_per_rank(c, r.tp).max_values);
  }
  // TPLA at TP 4: each rank caches a 128-wide slice (one group) and k_pe.
  ModelConfig tpla = config("mla", "mla");
  tpla.mla_tp_mode = LatentTpMode::kTpla;
  CHECK(cache_row_bytes_per_rank(tpla, 4, CacheEncoding::kFp8E4M3, 2).max_values == 128 + 4 + 128);
}

TEST_CASE("the fp8 cache meets the capacity targets and inspect prints them", "[fp8][inspect]") {
  const ModelConfig mla = config("mla", "mla"), mlra4 = config("mlra_4", "mlra4");
  auto ratio = [](const ModelConfig& c, int tp) {
    return double(cache_row_bytes_per_rank(c, tp, CacheEncoding::kPlain, 2).max_values) /
           double(cache_row_bytes_per_rank(c, tp, CacheEncoding::kFp8E4M3, 2).max_values);
  };
  for (int tp : {1, 2, 4, 8}) CHECK(ratio(mla, tp) >= 1.7);
  CHECK(ratio(mlra4, 4) >= 1.4);

  std::ostringstream out;
  run_inspect({config_path("mlra_4"), true, "mlra4"}, out);
  // TP 4: 192 values, 384 bf16 bytes, 1.5 d_h, 9216 bf16 bytes/token; 260 FP8 bytes, 6240 per
  // token over 24 layers, 384 / 260 = 1.477x.
  CHECK_THAT(out.str(), Contains("fp8 bytes/token"));
  std::istringstream lines(out.str());
  std::string line;
  bool found = false;
  while (std::getline(lines, line)) {
    if (line.rfind("  TP 4 ", 0) != 0) continue;
    std::istringstream cols(line.substr(7));
    std::string values, bytes, dh, per_token, fp8, fp8_per_token, times;
    cols >> values >> bytes >> dh >> per_token >> fp8 >> fp8_per_token >> times;
    CHECK(values == "192");
    CHECK(bytes == "384");
    CHECK(fp8 == "260");
    CHECK(fp8_per_token == "6240");
    CHECK(times == "1.477");
    found = true;
  }
  CHECK(found);
}

TEST_CASE("at one gpu_memory_fraction the fp8 cache holds the target multiple of tokens",
          "[fp8][capacity]") {
  // An 80 GiB GPU per rank at TP 4 with 2 GiB in use (the rank's weights, the CUDA context),
  // gpu_memory_fraction 0.9, pages of 64, decode graphs up to batch 256: the sizing engine/rank.cpp
  // runs, once per cache encoding.
  const DeviceMemory gpu{(80LL << 30) - (2LL << 30), 80LL << 30};  // free, total
  struct Target {
    const char* dir;
    const char* variant;
    int tp;
    double at_least;
  };
  for (const Target& t : {Target{"mla", "mla", 4, 1.7}, Target{"mla", "mla", 1, 1.7},
                          Target{"mlra_4", "mlra4", 4, 1.4}}) {
    INFO(t.dir << " TP " << t.tp);
    const ModelConfig c = config(t.dir, t.variant);
    auto tokens = [&](CacheEncoding e) {
      const int64_t per_token =
          cache_row_bytes_per_rank(c, t.tp, e, cache_value_bytes("cuda")).max_values * c.n_layer;
      return gpu_cache_pages(gpu, 0.9, activation_reserve_bytes(c, 256), per_token, 64) * 64;
    };
    const int64_t plain = tokens(CacheEncoding::kPlain), fp8 = tokens(CacheEncoding::kFp8E4M3);
    UNSCOPED_INFO("tokens per rank: bf16 " << plain << ", fp8 " << fp8);
    REQUIRE(plain > 0);
    CHECK(double(fp8) / double(plain) >= t.at_least);
  }
}
