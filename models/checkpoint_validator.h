// Checks a checkpoint against the exact state_dict of its configured variant
// (expected_tensors in models/tensor_layout.h): every tensor present, nothing extra, shapes equal.
// lm_head.weight may be absent (tied to transformer.wte.weight, as safetensors saves drop it).
#pragma once

#include "models/checkpoint.h"
#include "models/model_config.h"

namespace mlra {

// Throws CheckpointError with a one-line message naming the file (or folder) and the tensor.
void validate_checkpoint(const Checkpoint& ckpt, const ModelConfig& config);

}  // namespace mlra
