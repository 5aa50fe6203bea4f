// One attention block of one TP rank: loads its shard of the layer's weights and turns the
// normed input into this rank's partial c_proj output (summed over ranks by the all-reduce).
// Implementations: LatentAttention (MLA/GLA/MLRA, absorbed form over the latent cache) and
// KvAttention (MHA/GQA/MQA/GTA/MFA/TPA over a K/V cache).
#pragma once

#include <memory>

#include "kernels/backend.h"
#include "models/model_config.h"
#include "models/shard_plan.h"
#include "models/step_context.h"
#include "models/weight_loader.h"

namespace mlra {

class AttentionLayer {
 public:
  virtual ~AttentionLayer() = default;
  // x: [T, d] normed input (act dtype). cache: this layer's pages on this rank.
  // out: [T, d] partial output (act dtype), overwritten.
  virtual void forward(const MatView& x, const StepContext& step, const PagedCacheView& cache,
                       const MatView& out) = 0;
};

std::unique_ptr<AttentionLayer> make_attention_layer(const ModelConfig& config,
                                                     const ShardPlan& plan, int64_t layer,
                                                     const WeightLoader& loader);

}  // namespace mlra
