// Attention of the K/V-cache baselines (MHA, GQA, MQA, GTA, MFA, TPA) on one TP rank.
// Cache rows: MHA/GQA/MQA/TPA [K of each local KV head | V of each]; MFA [k | v] (one shared
// head); GTA [s|u of each local KV head | shared rope key r] with K_h = [s | r], V_h = [s | u].
// TPA caches its heads' full K/V (not the factored form): simpler kernels, more cache bytes.
#pragma once

#include "models/attention_layer.h"

namespace mlra {

class KvAttention final : public AttentionLayer {
 public:
  KvAttention(const ModelConfig& config, const ShardPlan& plan, int64_t layer,
              const WeightLoader& loader);
  void forward(const MatView& x, const StepContext& step, const PagedCacheView& cache,
               const MatView& out) override;

 private:
  void project_tpa(const MatView& x, const StepContext& step, Tensor& q, Tensor& k, Tensor& v);

  const ModelConfig& config_;
  const ShardPlan& plan_;
  Backend& backend_;
  int head_begin_ = 0;
  Tensor gate_;   // gqa_gated: [n_local * hd, d]
  Tensor q_;      // [n_local * hd, d] (MFA: w_q rows [n_local * hd, share_q_dim])
  Tensor k_, v_;  // [n_kv * hd, d]; GTA: k_ = kv_proj rows [n_kv * hd, d], v_ = W_rope_k
  Tensor mfa_cq_, mfa_norm_;                  // MFA shared query down-projection and its norm
  Tensor a_q_, a_k_, a_v_, b_q_, b_k_, b_v_;  // TPA factors (A sharded by head, B replicated)
  Tensor c_proj_;                             // [d, n_local * hd]
};

}  // namespace mlra
