// TPLA calibration: per-layer second moments of the latent an MLA checkpoint caches, streamed
// from calibration tokens, and the PCA transforms derived from them.
// The vector is c = kv_scale * g (.) RMSNorm(W_dkv x), the latent part of plain MLA's cache row:
// TPLA caches U^T c (latent_weights.cpp folds U and the gain g), rank r keeps columns
// [r*w, (r+1)*w) of it, so the PCA is over E[c c^T] (uncentred: attention scores see c itself).
#pragma once

#include <cstdint>
#include <filesystem>
#include <vector>

#include "models/latent_observer.h"
#include "models/model_config.h"
#include "models/variant.h"

namespace mlra {

// Sums of c c^T per layer in double, updated per step; nothing else is kept.
class LatentMoments final : public LatentObserver {
 public:
  LatentMoments(int64_t n_layer, int64_t width);
  void observe(int64_t layer, const float* rows, int64_t tokens, int64_t width) override;

  int64_t layers() const { return int64_t(count_.size()); }
  int64_t width() const { return width_; }
  int64_t count(int64_t layer) const { return count_.at(size_t(layer)); }
  // [width, width] row-major, symmetric: sum over observed c of c c^T / count.
  std::vector<double> second_moment(int64_t layer) const;

 private:
  int64_t width_;
  std::vector<std::vector<double>> sum_;  // upper triangle (row-major) of sum c c^T
  std::vector<int64_t> count_;
  std::vector<double> scratch_;  // rows of one call, as double
};

struct CalibrationOptions {
  int32_t window = 512;        // tokens per forward; positions restart at 0 in every window
  int64_t max_tokens = 65536;  // at most this many tokens are run, from the start
};

// Runs `tokens` through the MLA checkpoint in `model_dir` (replicated latent, TP1, CPU backend)
// in windows and returns every layer's moments. Throws std::invalid_argument when the variant is
// not MLA, there is no token or a token is outside the vocabulary; CheckpointError/ConfigError
// from loading.
LatentMoments collect_latent_moments(const std::filesystem::path& model_dir, const Variant& variant,
                                     const std::vector<int32_t>& tokens,
                                     const CalibrationOptions& options);

// The same windows through rank 0 of TP1 with any latent-family `config` (e.g. TPLA with a
// transform, to see the transformed cache rows), each layer's rows handed to `observer`.
void observe_calibration_run(const std::filesystem::path& model_dir, const ModelConfig& config,
                             const std::vector<int32_t>& tokens, const CalibrationOptions& options,
                             LatentObserver& observer);

// How principal components are dealt to the slices (rank r keeps slice r). Descending is the
// default: each slice runs its own softmax, and with the top components in slice 0 that slice's
// partial score is nearly the full one while the rest carry little energy to misweight. Dealing
// the top components round-robin splits every score into comparable parts, each softmax then
// sees a flattened score, which measured worse than plain slicing (README.md, Benchmarks).
enum class SliceOrder {
  kDescending,   // slice 0 gets the top w components, slice 1 the next w, ...
  kInterleaved,  // component k goes to slice k % slices: every slice gets a share of the top
};

// The PCA transform ([n, n] row-major, orthonormal columns) of one layer's second moment with
// its columns arranged by `order` for `slices` slices (n % slices == 0).
std::vector<float> slice_ordered_pca(const std::vector<double>& second_moment, int64_t n,
                                     SliceOrder order, int slices);

}  // namespace mlra
