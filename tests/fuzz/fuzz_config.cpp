// libFuzzer: config.json (models/model_config.h) and the server config (engine/server_config.h)
// from arbitrary JSON text. The first byte picks the variant the model config is read as. Only
// ConfigError may come out; an accepted model config must give its tensor list, parameter count
// and cache width without overflow (UBSan aborts on signed overflow).
#include <nlohmann/json.hpp>

#include "engine/server_config.h"
#include "models/model_config.h"
#include "models/tensor_layout.h"
#include "models/variant.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mlra;
  static const char* kVariants[] = {"mlra4", "mlra2",     "mla",           "gla2", "gla4",
                                    "gqa",   "mqa",       "mha",           "gta",  "mfa",
                                    "tpa",   "mla_gated", "mlra4_no_scale"};
  if (size < 1) return 0;
  const auto variant = parse_variant(kVariants[data[0] % std::size(kVariants)]);
  const nlohmann::json j = nlohmann::json::parse(data + 1, data + size, nullptr, false);
  if (j.is_discarded()) return 0;
  try {
    const ModelConfig c = parse_model_config(j, *variant);
    int64_t values = 0;
    for (const auto& t : expected_tensors(c)) values += t.numel() > 0 ? 1 : 0;
    (void)values;
    (void)c.param_count();
    (void)c.cache_values_per_token();
  } catch (const ConfigError&) {
  }
  try {
    (void)to_json(parse_server_config(j, "/nonexistent/fuzz"));
  } catch (const ConfigError&) {
  }
  return 0;
}
