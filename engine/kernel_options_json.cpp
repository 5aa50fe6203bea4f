// Parsing and writing of the "kernels" config object; see kernel_options_json.h. One field table
// drives both directions, so a new KernelOptions field is one row here.
#include "engine/kernel_options_json.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "models/model_config.h"

namespace mlra {
namespace {

struct Field {
  const char* key;
  int KernelOptions::*member;
  int min, max;
};

constexpr Field kFields[] = {
    {"gemv_max_rows", &KernelOptions::gemv_max_rows, 0, KernelOptions::kMaxGemvRows},
    {"latent_uk_t", &KernelOptions::latent_uk_t, 0, 1},
    {"kv_split_per_sm", &KernelOptions::kv_split_per_sm, 0, KernelOptions::kMaxKvSplitPerSm},
    {"mlp_block", &KernelOptions::mlp_block, 0, 1},
    {"attn_block", &KernelOptions::attn_block, 0, 1},
    {"gemv_k_tail", &KernelOptions::gemv_k_tail, 0, 1},
};

}  // namespace

KernelOptions parse_kernel_options(const nlohmann::json& j) {
  if (!j.is_object()) throw ConfigError("config key 'kernels' must be a JSON object");
  KernelOptions options;
  for (const auto& [key, value] : j.items()) {
    const Field* field = nullptr;
    for (const Field& f : kFields)
      if (key == f.key) field = &f;
    if (!field) throw ConfigError(fmt::format("unknown config key 'kernels.{}'", key));
    // Integers only: a bool or 1.5 would otherwise convert silently.
    if (!value.is_number_integer() ||
        (value.is_number_unsigned() && value.get<uint64_t>() > uint64_t(field->max)) ||
        value.get<int64_t>() < field->min || value.get<int64_t>() > field->max)
      throw ConfigError(fmt::format("config key 'kernels.{}' must be an integer in {}..{}, got {}",
                                    key, field->min, field->max, value.dump()));
    options.*(field->member) = value.get<int>();
  }
  if (const std::string why = kernel_options_error(options); !why.empty())
    throw ConfigError("config key 'kernels': " + why);
  return options;
}

nlohmann::json to_json(const KernelOptions& options) {
  nlohmann::json j = nlohmann::json::object();
  for (const Field& f : kFields) j[f.key] = options.*(f.member);
  return j;
}

}  // namespace mlra
