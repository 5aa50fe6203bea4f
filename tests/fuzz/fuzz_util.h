// Shared pieces of the libFuzzer targets: the input as bytes, and an in-memory Checkpoint over
// indexed tensors so the fuzzers exercise Checkpoint::read_f32 (strided, sliced, finiteness)
// exactly as the loader does. A target catches only the error type its reader documents;
// anything else escapes and libFuzzer reports it as a crash.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "models/checkpoint.h"

namespace mlra::fuzz {

inline std::span<const std::byte> as_bytes(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const std::byte*>(data), size};
}

class MemoryCheckpoint final : public Checkpoint {
 public:
  explicit MemoryCheckpoint(const std::vector<TensorInfo>& tensors) {
    for (const auto& t : tensors) tensors_.emplace(t.name, t);
  }
  const std::filesystem::path& dir() const override { return dir_; }
  std::vector<std::string> names() const override {
    std::vector<std::string> out;
    for (const auto& [name, t] : tensors_) out.push_back(name);
    return out;
  }
  bool has(const std::string& name) const override { return tensors_.count(name) != 0; }
  const TensorInfo& info(const std::string& name) const override {
    auto it = tensors_.find(name);
    if (it == tensors_.end()) throw CheckpointError("no tensor '" + name + "'");
    return it->second;
  }
  std::string format() const override { return "memory"; }
  std::vector<std::string> files() const override { return {}; }
  uint64_t total_bytes() const override { return 0; }

 private:
  std::filesystem::path dir_ = "fuzz";
  std::map<std::string, TensorInfo> tensors_;
};

// Reads every tensor whole and, for rank >= 1, a slice of its last half along dimension 0.
inline void read_every_tensor(const std::vector<TensorInfo>& tensors) {
  MemoryCheckpoint ckpt(tensors);
  for (const auto& name : ckpt.names()) {
    try {
      ckpt.read_f32(name);
      const auto& shape = ckpt.info(name).shape;
      if (!shape.empty()) {
        std::vector<Range> ranges;
        for (int64_t d : shape) ranges.push_back({0, d});
        ranges[0].first = shape[0] / 2;
        ckpt.read_f32(name, ranges);
      }
    } catch (const CheckpointError&) {
    }
  }
}

}  // namespace mlra::fuzz
