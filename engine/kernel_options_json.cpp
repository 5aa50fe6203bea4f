// Parsing and writing of the "kernels" config object; see kernel_options_json.h.
#include "engine/kernel_options_json.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "models/model_config.h"

namespace mlra {

KernelOptions parse_kernel_options(const nlohmann::json& j) {
  if (!j.is_object()) throw ConfigError("config key 'kernels' must be a JSON object");
  KernelOptions options;
  for (const auto& [key, value] : j.items())
    throw ConfigError(fmt::format("unknown config key 'kernels.{}'", key));
  return options;
}

nlohmann::json to_json(const KernelOptions&) { return nlohmann::json::object(); }

}  // namespace mlra
