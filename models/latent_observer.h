// A read-only tap on the latent-family cache rows as attention writes them, for calibration
// (TPLA's PCA). Attention calls it only when a step carries one (StepContext::latent_observer),
// so the serving path pays one null check per layer. Observing downloads the rows to the host,
// so it runs eagerly only (never inside a recorded decode graph).
#pragma once

#include <cstdint>

namespace mlra {

class LatentObserver {
 public:
  virtual ~LatentObserver() = default;
  // rows: [tokens, width] float32, row-major: the latent part of every step token's cache row on
  // this rank, exactly as written (normed and scaled; TPLA: the transformed local slices),
  // before the RoPE key. Called once per layer per step, layers in order.
  virtual void observe(int64_t layer, const float* rows, int64_t tokens, int64_t width) = 0;
};

}  // namespace mlra
