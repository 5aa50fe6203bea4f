// Picks the attention implementation of a variant family.
#include "models/attention_layer.h"

#include "models/kv_attention.h"
#include "models/latent_attention.h"

namespace mlra {

std::unique_ptr<AttentionLayer> make_attention_layer(const ModelConfig& config,
                                                     const ShardPlan& plan, int64_t layer,
                                                     const WeightLoader& loader) {
  if (config.variant.is_latent())
    return std::make_unique<LatentAttention>(config, plan, layer, loader);
  return std::make_unique<KvAttention>(config, plan, layer, loader);
}

}  // namespace mlra
