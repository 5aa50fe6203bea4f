// TPLA transforms and their file format.
#include "models/tpla.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <random>
#include <stdexcept>

extern "C" void dsyev_(const char* jobz, const char* uplo, const int* n, double* a, const int* lda,
                       double* w, double* work, const int* lwork, int* info);

namespace mlra {
namespace {
constexpr char kMagic[8] = {'M', 'L', 'R', 'A', 'T', 'P', 'L', 'A'};
}

std::vector<float> identity_transform(int64_t n) {
  std::vector<float> u(static_cast<size_t>(n * n), 0.0f);
  for (int64_t i = 0; i < n; ++i) u[size_t(i * n + i)] = 1.0f;
  return u;
}

std::vector<float> hadamard_transform(int64_t n, uint64_t seed) {
  if (n <= 0 || (n & (n - 1)) != 0)
    throw std::invalid_argument("hadamard: size must be a power of two");
  std::mt19937_64 rng(seed);
  std::vector<float> sign(static_cast<size_t>(n));
  for (auto& s : sign) s = (rng() & 1) ? 1.0f : -1.0f;
  const float norm = float(1.0 / std::sqrt(double(n)));
  std::vector<float> u(static_cast<size_t>(n * n));
  // Sylvester: H[i][j] = (-1)^popcount(i & j); random signs on the rows keep it orthogonal.
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j)
      u[size_t(i * n + j)] =
          sign[size_t(i)] * norm * ((__builtin_popcountll(uint64_t(i & j)) & 1) ? -1.0f : 1.0f);
  return u;
}

std::vector<float> random_orthogonal_transform(int64_t n, uint64_t seed) {
  // Gram-Schmidt (twice, for stability) on Gaussian columns: a Haar-random rotation.
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal;
  std::vector<double> q(size_t(n * n));
  for (auto& x : q) x = normal(rng);
  for (int64_t c = 0; c < n; ++c)
    for (int pass = 0; pass < 2; ++pass) {
      for (int64_t p = 0; p < c; ++p) {
        double dot = 0;
        for (int64_t i = 0; i < n; ++i) dot += q[size_t(i * n + c)] * q[size_t(i * n + p)];
        for (int64_t i = 0; i < n; ++i) q[size_t(i * n + c)] -= dot * q[size_t(i * n + p)];
      }
      double norm = 0;
      for (int64_t i = 0; i < n; ++i) norm += q[size_t(i * n + c)] * q[size_t(i * n + c)];
      norm = std::sqrt(norm);
      for (int64_t i = 0; i < n; ++i) q[size_t(i * n + c)] /= norm;
    }
  return {q.begin(), q.end()};
}

std::vector<float> pca_transform(const std::vector<double>& m, int64_t n) {
  if (int64_t(m.size()) != n * n) throw std::invalid_argument("pca: matrix size mismatch");
  std::vector<double> a = m, w(static_cast<size_t>(n));
  int nn = int(n), info = 0, lwork = -1;
  double query = 0;
  dsyev_("V", "U", &nn, a.data(), &nn, w.data(), &query, &lwork, &info);
  lwork = int(query);
  std::vector<double> work(static_cast<size_t>(std::max(lwork, 1)));
  dsyev_("V", "U", &nn, a.data(), &nn, w.data(), work.data(), &lwork, &info);
  if (info != 0) throw std::runtime_error("pca: dsyev failed with info " + std::to_string(info));
  // LAPACK (column-major) returns eigenvector k in a[k*n .. k*n+n), eigenvalues ascending.
  std::vector<float> u(static_cast<size_t>(n * n));
  for (int64_t k = 0; k < n; ++k)
    for (int64_t i = 0; i < n; ++i) u[size_t(i * n + k)] = float(a[size_t((n - 1 - k) * n + i)]);
  return u;
}

void save_transform_file(const std::filesystem::path& path,
                         const std::vector<std::vector<float>>& per_layer, int64_t n) {
  std::ofstream out(path, std::ios::binary);
  if (!out) throw std::runtime_error("cannot write " + path.string());
  const int64_t layers = int64_t(per_layer.size());
  out.write(kMagic, 8);
  out.write(reinterpret_cast<const char*>(&layers), 8);
  out.write(reinterpret_cast<const char*>(&n), 8);
  for (const auto& u : per_layer) {
    if (int64_t(u.size()) != n * n) throw std::invalid_argument("transform of wrong size");
    out.write(reinterpret_cast<const char*>(u.data()), std::streamsize(u.size() * 4));
  }
  if (!out) throw std::runtime_error("write failed: " + path.string());
}

std::vector<float> load_transform_layer(const std::filesystem::path& path, int64_t layer,
                                        int64_t n) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("tpla: cannot open transform file " + path.string());
  char magic[8];
  int64_t layers = 0, size = 0;
  in.read(magic, 8);
  in.read(reinterpret_cast<char*>(&layers), 8);
  in.read(reinterpret_cast<char*>(&size), 8);
  if (!in || std::memcmp(magic, kMagic, 8) != 0)
    throw std::runtime_error("tpla: " + path.string() + " is not a transform file");
  if (size != n || layer >= layers)
    throw std::runtime_error("tpla: " + path.string() + " holds " + std::to_string(layers) +
                             " layers of size " + std::to_string(size) + ", need layer " +
                             std::to_string(layer) + " of size " + std::to_string(n));
  std::vector<float> u(static_cast<size_t>(n * n));
  in.seekg(24 + layer * n * n * 4);
  if (!in.read(reinterpret_cast<char*>(u.data()), std::streamsize(u.size() * 4)))
    throw std::runtime_error("tpla: " + path.string() + " is truncated");
  return u;
}

std::vector<float> tpla_layer_transform(const ModelConfig& c, int64_t layer) {
  const int64_t n = c.latent_dim();
  const std::string& t = c.tpla_options.transform;
  if (t == "identity") return identity_transform(n);
  if (t == "hadamard") {
    if ((n & (n - 1)) != 0)
      throw std::invalid_argument("tpla: hadamard needs a power-of-two latent width, not " +
                                  std::to_string(n) + "; use tpla_transform=random");
    return hadamard_transform(n, c.tpla_options.seed + uint64_t(layer));
  }
  if (t == "random") return random_orthogonal_transform(n, c.tpla_options.seed + uint64_t(layer));
  return load_transform_layer(t, layer, n);
}

}  // namespace mlra
