// Helpers for the [checkpoint] tests: scratch folders, a hand-rolled safetensors writer (an
// implementation independent of the reader under test), fixture paths and a reference slicer.
#pragma once

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "models/checkpoint.h"
#include "models/tensor_layout.h"

namespace mlra::test {

inline std::filesystem::path loader_data(const std::string& rel) {
  return std::filesystem::path(MLRA_TEST_DATA) / "loader" / rel;
}

// A fresh, empty folder, removed on destruction: in /dev/shm when present (the fuzz tests
// rewrite files thousands of times; a busy shared disk would dominate their run time).
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& tag) {
    static std::mt19937_64 rng(std::random_device{}());
    const std::filesystem::path shm = "/dev/shm";
    path_ = (std::filesystem::is_directory(shm) ? shm : std::filesystem::temp_directory_path()) /
            ("mlra_ckpt_" + tag + "_" + std::to_string(rng()));
    std::filesystem::create_directories(path_);
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& f) const { return path_ / f; }

 private:
  std::filesystem::path path_;
};

inline std::vector<char> read_bytes(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}
inline void write_bytes(const std::filesystem::path& p, const std::vector<char>& b) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(b.data(), static_cast<std::streamsize>(b.size()));
}

// Writes F32 tensors with random (non-zero) values; returns the values written, by name.
inline std::vector<std::vector<float>> write_safetensors(const std::filesystem::path& p,
                                                         const std::vector<TensorSpec>& specs,
                                                         uint32_t seed = 7) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(0.1f, 1.0f);
  nlohmann::json header = nlohmann::json::object();
  std::vector<std::vector<float>> values;
  uint64_t offset = 0;
  for (const auto& s : specs) {
    values.emplace_back(static_cast<size_t>(s.numel()));
    for (auto& v : values.back()) v = dist(rng);
    const uint64_t n = values.back().size() * 4;
    header[s.name] = {{"dtype", "F32"}, {"shape", s.shape}, {"data_offsets", {offset, offset + n}}};
    offset += n;
  }
  const std::string h = header.dump();
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  const uint64_t len = h.size();
  out.write(reinterpret_cast<const char*>(&len), 8);
  out << h;
  for (const auto& v : values) out.write(reinterpret_cast<const char*>(v.data()), v.size() * 4);
  return values;
}

// Row-major hyper-rectangle of a flat reference array.
inline std::vector<float> slice_reference(const std::vector<float>& flat,
                                          const std::vector<int64_t>& shape,
                                          const std::vector<Range>& ranges) {
  std::vector<float> out;
  std::vector<int64_t> idx(shape.size());
  for (size_t d = 0; d < shape.size(); ++d) idx[d] = ranges[d].first;
  for (size_t d = 0; d < shape.size(); ++d)
    if (ranges[d].first == ranges[d].second) return out;
  while (true) {
    int64_t flat_i = 0;
    for (size_t d = 0; d < shape.size(); ++d) flat_i = flat_i * shape[d] + idx[d];
    out.push_back(flat[static_cast<size_t>(flat_i)]);
    int d = static_cast<int>(shape.size()) - 1;
    for (; d >= 0; --d) {
      if (++idx[d] < ranges[d].second) break;
      idx[d] = ranges[d].first;
    }
    if (d < 0) return out;
  }
}

}  // namespace mlra::test
