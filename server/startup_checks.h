// Checks of a server config against the model it names and the machine it runs on, made before
// anything is loaded so that these mistakes fail `serve` at once: max_context past the block size
// the model was trained for (an error, not a clamp: positions past it were never seen), and a
// CPU cache larger than the machine's memory (which would otherwise end in a bare bad_alloc).
#pragma once

#include "engine/server_config.h"

namespace mlra {

// Throws ConfigError naming the key. Reads only the model's config.json.
void check_config_against_model(const ServerConfig& config);

}  // namespace mlra
