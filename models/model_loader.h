// One call from a checkpoint folder to a validated (config, checkpoint) pair: reads config.json
// for the configured variant, maps the weights, refuses a variant the tensors contradict and any
// missing / extra / mis-shaped tensor. Shows progress on a terminal and logs a summary line.
#pragma once

#include <filesystem>
#include <memory>

#include "models/checkpoint.h"
#include "models/model_config.h"

namespace mlra {

struct LoadedModel {
  ModelConfig config;
  std::shared_ptr<Checkpoint> checkpoint;
};

// Throws ConfigError (config.json) or CheckpointError (weights), each naming file and field.
LoadedModel load_model(const std::filesystem::path& dir, const Variant& variant);

}  // namespace mlra
