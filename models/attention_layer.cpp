// Picks the attention implementation of a variant family (its traits row).
#include "models/attention_layer.h"

#include <stdexcept>

#include "models/kv_attention.h"
#include "models/latent_attention.h"
#include "models/variant_traits.h"

namespace mlra {

std::unique_ptr<AttentionLayer> make_attention_layer(const ModelConfig& config,
                                                     const ShardPlan& plan, int64_t layer,
                                                     const WeightLoader& loader) {
  switch (traits(config.variant.kind).family) {
    case AttentionFamily::kLatent:
      return std::make_unique<LatentAttention>(config, plan, layer, loader);
    case AttentionFamily::kKv:
      return std::make_unique<KvAttention>(config, plan, layer, loader);
  }
  throw std::logic_error("make_attention_layer: unknown attention family");
}

}  // namespace mlra
