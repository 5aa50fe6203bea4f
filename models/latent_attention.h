// Absorbed-form attention for the latent family (MLA, GLA-2, GLA-4, MLRA-2, MLRA-4) on one TP
// rank. See latent_attention.cpp for the math; cache row = [local latents | k_pe].
#pragma once

#include <string>
#include <vector>

#include "models/attention_layer.h"
#include "models/tensor_layout.h"

namespace mlra {

class LatentAttention final : public AttentionLayer {
 public:
  LatentAttention(const ModelConfig& config, const ShardPlan& plan, int64_t layer,
                  const WeightLoader& loader);
  void forward(const MatView& x, const StepContext& step, const PagedCacheView& cache,
               const MatView& out) override;

 private:
  struct Unit {
    LatentUnit spec;
    Tensor w_uk;  // [heads, dn, dc]: q~ = W_UK^T q_nope
    Tensor w_uv;  // [heads, dn, dc]: o = W_UV z
    int32_t cache_offset = 0;  // column of this unit's latent in the cache row
  };
  Unit load_unit(const WeightLoader& w, const std::string& prefix, const LatentUnit& u) const;

  const ModelConfig& config_;
  const ShardPlan& plan_;
  Backend& backend_;
  int head_begin_ = 0;
  Tensor gate_;       // [n_local * dn, d]
  Tensor q_a_;        // [r_q, d] (replicated)
  Tensor q_a_norm_;   // [r_q]
  Tensor q_b_nope_;   // [n_local * dn, r_q]
  Tensor q_b_rope_;   // [n_local * dr, r_q]
  Tensor kv_a_;       // [n_local_latents * dc + dr, d]
  std::vector<Tensor> latent_norms_;  // per local latent [dc]
  std::vector<Unit> units_;
  Tensor c_proj_;     // [d, n_local * dn]
};

}  // namespace mlra
