// The exact state_dict of each variant (models/VARIANTS.md sections 3 and 4): names, shapes, order.
// Used to validate checkpoints (missing / extra / mis-shaped tensors), to count parameters, and
// by scripts that write test checkpoints.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "models/model_config.h"

namespace mlra {

struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
};

// In state_dict order; includes both tied keys (transformer.wte.weight and lm_head.weight).
std::vector<TensorSpec> expected_tensors(const ModelConfig& config);
// The attention keys of one layer (without the "transformer.h.{i}." prefix).
std::vector<TensorSpec> attention_tensors(const ModelConfig& config);
std::string layer_prefix(int64_t layer);  // "transformer.h.{layer}."

}  // namespace mlra
