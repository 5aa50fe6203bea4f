// The weight products of one decode step on one TP rank, as the forward issues them (per layer,
// then the LM head on rank 0): shapes from the config and the rank's shard plan. `mlra-bench gemv`
// times them; tests/gpu/test_cuda_gemv_tail.cpp requires the GEMV to take each of them, and
// tests/test_decode_products.cpp holds the list to the products a CPU decode step records.
// The TPA combine (a per-token product of two activations, one row per local head) is not a
// weight product and is not listed.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/kernel_options.h"
#include "models/model_config.h"
#include "models/shard_plan.h"

namespace mlra {

// batch x (y [M, N] = x [M, K] . op(w)), M the step's tokens. A batched product's operands sit
// side by side (x [M, batch * K], batch entries K apart, or one x for all when x_shared); w entries
// back to back. Rows of x and w are stored with ld = padded_ld(K) (weight_loader.h) when batch
// is 1, batch * K otherwise.
struct DecodeProduct {
  std::string name;
  int64_t n = 0, k = 0, batch = 1;
  bool out_by_in = true;  // w [N, K] (nn.Linear); false: w [K, N]
  bool glu = false;       // SwiGLU: w = [W1; W2] ([2N, K]), y = silu(x . W1^T) * (x . W2^T)
  bool x_shared = false;  // batched: one x for every entry
  bool y_f32 = false;     // y float32 (gates, logits), else the activation dtype
};

// Every weight product of a decode step of `plan`'s rank, without repeats (one entry per shape
// and name: the units of a rank often have equal shapes), as the model issues them under the
// kernel options `options`. The latent query product over W_UK per unit is the one that depends on
// them: under latent_uk_t 0 it multiplies by "w_uk" as stored ([dn, width] per head, out_by_in
// false); under latent_uk_t 1 by the copy "w_uk_t" ([width, dn] per head, out_by_in), the form
// the tensor-core GEMV takes for 2..8 tokens (Backend::latent_uk_layouts).
std::vector<DecodeProduct> decode_products(const ModelConfig& config, const ShardPlan& plan,
                                           const KernelOptions& options = {});

}  // namespace mlra
