// Absorbed-form attention for the latent family (MLA, GLA-2, GLA-4, MLRA-2, MLRA-4) on one TP
// rank, plus TPLA for MLA checkpoints. Cache row = [local latents (or TPLA slices) | k_pe].
// See latent_attention.cpp for the math and latent_weights.cpp for how weights are prepared.
#pragma once

#include <string>
#include <vector>

#include "models/attention_layer.h"
#include "models/latent_expansion.h"
#include "models/tensor_layout.h"

namespace mlra {

class LatentAttention final : public AttentionLayer {
 public:
  LatentAttention(const ModelConfig& config, const ShardPlan& plan, int64_t layer,
                  const WeightLoader& loader);
  void forward(const MatView& x, const StepContext& step, const PagedCacheView& cache,
               const MatView& out) override;

  // A (latent, heads) pair set with its absorbed up-projections. W_UK is kept in the copies the
  // backend reads (Backend::latent_uk_layouts) plus w_uk wherever the expanded prefill reads it;
  // an absent copy has no data. The CPU, and CUDA under the kernel option latent_uk_t 0, keep
  // w_uk only: no copy, no extra memory. Under latent_uk_t 1 (the default) CUDA keeps
  // w_uk_t, always (the tensor-core GEMV of 2..8-token steps takes only that layout), and w_uk
  // where the one-token fused kernel may run (4..8 units) or the expanded prefill may (MLA, GLA;
  // latent_prefill not "absorbed"). Extra bytes per layer and rank under latent_uk_t 1 at the
  // 2.9B shapes (d_n 128; heads x d_n x width x 2 bytes): MLRA-4 TP1 3,145,728 (4 units of 24
  // heads, width 128), TP4 0 (one unit: w_uk_t only); MLA TP1 3,145,728 (24 heads, width 512),
  // TP4 786,432 (6 heads), both 0 with latent_prefill "absorbed".
  struct Unit {
    LatentUnit spec;
    Tensor w_uk;               // [heads, dn, width]: q~ = W_UK^T q_nope
    Tensor w_uk_t;             // [heads, width, dn]: W_UK^T per head (nn.Linear layout)
    Tensor w_uv;               // [heads, dn, width]: o = W_UV z
    int32_t cache_offset = 0;  // column of this unit's latent in the cache row
  };

 private:
  void load_tpla(const WeightLoader& w, const std::string& prefix, int64_t layer);
  // A unit from its host W_UK and W_UV ([heads, dn, width] each): uploads the copies of W_UK
  // that `layouts` names (w_uk also when keep_in_by_out) and W_UV.
  static Unit make_unit(const WeightLoader& w, const LatentUnit& spec, int64_t dn, int64_t width,
                        const std::vector<float>& uk, const std::vector<float>& uv,
                        Backend::LatentUkLayouts layouts, bool keep_in_by_out);
  std::vector<Backend::LatentUnitView> unit_views(const std::vector<Unit>& units,
                                                  int64_t first_head) const;
  // Rows of cq / q_nope are the step's tokens (step.num_tokens of them, at step.positions).
  Tensor virtual_queries(const std::vector<Unit>& units, int64_t width, const MatView& cq,
                         const MatView& q_nope, const StepContext& step);
  Tensor attend(const std::vector<Unit>& units, int64_t width, const Tensor& qv,
                const PagedCacheView& cache, int32_t r_offset, const StepContext& step);
  // The expanded form for the step's last plan.num_tokens tokens (latent_expansion.h): queries
  // [q_nope | q_pe] per head from their rows of cq, keys and values up-projected from the gathered
  // latents into a scratch cache; writes those tokens' rows of o (heads back to back, scaled).
  void expanded_prefill(const MatView& cq, const StepContext& step, const LatentExpansion& plan,
                        const PagedCacheView& cache, const MatView& o);
  void up_project(const std::vector<Unit>& units, int64_t width, const Tensor& z, const MatView& o,
                  float alpha);
  // Hands the cache rows' latent columns [T, width] to a calibration observer.
  void observe_latents(LatentObserver& observer, const MatView& latents);
  // TPLA prefill/decode separation: exact MLA attention of sequences prefilled from position 0
  // in this step (over the step's own full latents), written into rows of `o_exact`.
  void exact_prefill(const Tensor& cq, const Tensor& q_nope, const Tensor& normed_latent,
                     const MatView& x, const StepContext& step, const MatView& o_exact);

  const ModelConfig& config_;
  const ShardPlan& plan_;
  Backend& backend_;
  int64_t layer_ = 0;
  int head_begin_ = 0;
  Tensor gate_;      // [n_local * dn, d]
  Tensor x_proj_;    // [r_q + raw latent width + dr (not TPLA), d]: W_qa, W_kv rows (replicated)
  Tensor q_a_norm_;  // [r_q]
  Tensor q_b_nope_;  // [n_local * dn, r_q]
  Tensor q_b_rope_;  // [n_local * dr, r_q]
  Tensor kv_rope_;   // TPLA: [dr, d] (k_pe apart from x_proj_)
  Tensor latent_norms_;  // the local latents' norm weights back to back, [n_lat * dc] (not TPLA)
  Tensor ones_;          // TPLA: [dc] unit gain; the real gain is folded into the transform
  Tensor slice_proj_;    // TPLA: [n_local_slices * w, dc] = (diag(g) U)[:, local slices]^T
  Tensor exact_proj_;    // TPLA pd-separation: [dc, dc] = (diag(g) U)^T
  Unit exact_;           // TPLA pd-separation: every head over the whole transformed latent
  std::vector<Unit> units_;
  // Every local head reads one unit (MLA, GLA) and latent_prefill allows it: expanded prefill.
  bool expandable_ = false;
  Tensor c_proj_;  // [d, n_local * dn]
};

// W_UK and W_UV ([heads, dn, dc] row-major each) of heads [head_begin, head_end) reading latent l,
// from the checkpoint's variant-specific up-projection layout (models/VARIANTS.md table 5.3).
void read_up_projections(const ModelConfig& config, const WeightLoader& w,
                         const std::string& prefix, const LatentUnit& unit,
                         std::vector<float>& w_uk, std::vector<float>& w_uv);

// [heads, rows, cols] -> [heads, cols, rows] (W_UK -> W_UK^T per head).
std::vector<float> transpose_heads(const std::vector<float>& m, int64_t heads, int64_t rows,
                                   int64_t cols);

}  // namespace mlra
