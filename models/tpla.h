// TPLA (Tang et al., arXiv 2508.15881): orthogonal transforms U folded into an MLA checkpoint's
// latent path so that slicing the latent across TP ranks (each slice with its own softmax)
// loses little. c' = U^T c; W_UK' = W_UK U, W_UV' = W_UV U; exact when nothing is sliced.
// Transforms: identity, random-sign Hadamard (data-free), PCA (eigenvectors of the latent's
// second moment on calibration text, largest first: the leading slice carries most energy).
#pragma once

#include <cstdint>
#include <filesystem>
#include <vector>

#include "models/model_config.h"

namespace mlra {

// Row-major [n, n] orthonormal matrices.
std::vector<float> identity_transform(int64_t n);
std::vector<float> hadamard_transform(int64_t n, uint64_t seed);  // n a power of two
// Haar-random rotation (data-free like Hadamard, any n).
std::vector<float> random_orthogonal_transform(int64_t n, uint64_t seed);
// Eigenvectors (columns) of a symmetric [n, n] matrix, by decreasing eigenvalue (LAPACK dsyev).
std::vector<float> pca_transform(const std::vector<double>& second_moment, int64_t n);

// The transform of one layer for a config's TplaOptions (reads the PCA file when named).
std::vector<float> tpla_layer_transform(const ModelConfig& config, int64_t layer);

// PCA transform files: "MLRATPLA" magic, int64 n_layer, int64 n, then n_layer * n * n float32.
void save_transform_file(const std::filesystem::path& path,
                         const std::vector<std::vector<float>>& per_layer, int64_t n);
std::vector<float> load_transform_layer(const std::filesystem::path& path, int64_t layer,
                                        int64_t n);

}  // namespace mlra
