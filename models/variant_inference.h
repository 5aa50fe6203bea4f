// Tells the attention variant from a checkpoint's key names and shapes (models/VARIANTS.md flag
// F1), because config.json never names it and mla/gla/mlra share identical config fields.
// Only the base kind and the gated flag are visible in a checkpoint: no_scale and
// normal-initialisation siblings have identical tensors, so they can never be inferred.
#pragma once

#include <cstdint>
#include <string>

#include "models/checkpoint.h"
#include "models/model_config.h"

namespace mlra {

struct InferredVariant {
  Variant variant;       // no_scale is always false: it cannot be inferred
  std::string evidence;  // the keys/shapes that decided, e.g. "attn.kv_b_proj [4,128,6144] ..."
};

// Looks at layer 0. `kv_head_dim` tells MQA (c_k has exactly one head of rows) from GQA; the
// release uses 128. Throws CheckpointError when the layout matches no variant.
InferredVariant infer_variant(const Checkpoint& ckpt, int64_t kv_head_dim = 128);

// Throws CheckpointError saying what the checkpoint holds when its kind or gate differs from
// config.variant. A configured no_scale is accepted unverified (logged).
void check_variant(const Checkpoint& ckpt, const ModelConfig& config);

std::string shape_string(const std::vector<int64_t>& shape);  // "[4,128,6144]"

}  // namespace mlra
