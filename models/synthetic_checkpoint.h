// A checkpoint with random bf16 weights generated in memory for a config: every tensor of
// expected_tensors(config) (tied embedding stored once), values ~ N(0, 1/fan_in)-like uniform
// noise, norm gains near 1. Lets benchmarks run the real 2.9B shapes without 11 GB files.
#pragma once

#include <memory>

#include "models/checkpoint.h"
#include "models/model_config.h"

namespace mlra {

std::shared_ptr<Checkpoint> make_synthetic_checkpoint(const ModelConfig& config, uint64_t seed);

}  // namespace mlra
