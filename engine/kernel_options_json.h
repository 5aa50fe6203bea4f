// The "kernels" object of the server config <-> KernelOptions. Unknown keys and out-of-range values
// throw ConfigError naming "kernels.<key>"; to_json writes every field, so a worker receives the
// exact options of the server.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include "kernels/kernel_options.h"

namespace mlra {

KernelOptions parse_kernel_options(const nlohmann::json& j);
nlohmann::json to_json(const KernelOptions& options);

}  // namespace mlra
