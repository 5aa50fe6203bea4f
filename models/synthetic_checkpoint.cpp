// In-memory random checkpoint: one bf16 arena, filled by several threads with a counter-based
// hash so the values do not depend on the thread count.
#include "models/synthetic_checkpoint.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <thread>

#include "models/tensor_layout.h"

namespace mlra {
namespace {

uint64_t mix(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

uint16_t to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return uint16_t((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}

class SyntheticCheckpoint final : public Checkpoint {
 public:
  SyntheticCheckpoint(const ModelConfig& c, uint64_t seed) : dir_("<synthetic>") {
    const auto specs = expected_tensors(c);
    int64_t total = 0;
    for (const auto& s : specs)
      if (s.name != "lm_head.weight") total += s.numel();
    arena_.resize(size_t(total));
    int64_t offset = 0;
    struct Job {
      int64_t begin, n;
      float amplitude, center;
      uint64_t salt;
    };
    std::vector<Job> jobs;
    for (const auto& s : specs) {
      TensorInfo t;
      t.name = s.name;
      t.file = "<synthetic>";
      t.dtype = DType::kBF16;
      t.shape = s.shape;
      t.strides.assign(s.shape.size(), 1);
      for (int i = int(s.shape.size()) - 2; i >= 0; --i)
        t.strides[i] = t.strides[i + 1] * s.shape[i + 1];
      if (s.name == "lm_head.weight") {
        t.data = infos_.at("transformer.wte.weight").data;
        t.storage_id = "wte";
      } else {
        t.data = reinterpret_cast<const std::byte*>(arena_.data() + offset);
        t.storage_id = s.name == "transformer.wte.weight" ? "wte" : s.name;
        const bool gain = s.shape.size() == 1;
        const int64_t fan_in = s.shape.size() >= 2 ? s.shape.back() : 1;
        // Uniform with variance 1/fan_in (bare kv_b_proj is input-major: fan-in is dim 1).
        const int64_t fan = s.shape.size() == 3 ? s.shape[1] : fan_in;
        jobs.push_back({offset, s.numel(), gain ? 0.1f : float(std::sqrt(3.0 / double(fan))),
                        gain ? 1.0f : 0.0f, mix(seed + jobs.size())});
        offset += s.numel();
      }
      infos_[s.name] = t;
    }
    const unsigned n_threads = std::max(1u, std::min(16u, std::thread::hardware_concurrency()));
    std::vector<std::thread> threads;
    for (unsigned w = 0; w < n_threads; ++w)
      threads.emplace_back([&, w] {
        for (const auto& j : jobs)
          for (int64_t i = w; i < j.n; i += n_threads) {
            const double u = double(mix(j.salt ^ uint64_t(i)) >> 11) * (1.0 / 9007199254740992.0);
            arena_[size_t(j.begin + i)] = to_bf16(j.center + j.amplitude * float(2 * u - 1));
          }
      });
    for (auto& t : threads) t.join();
  }

  const std::filesystem::path& dir() const override { return dir_; }
  std::vector<std::string> names() const override {
    std::vector<std::string> n;
    for (const auto& [k, v] : infos_) n.push_back(k);
    return n;
  }
  bool has(const std::string& name) const override { return infos_.count(name) != 0; }
  const TensorInfo& info(const std::string& name) const override {
    auto it = infos_.find(name);
    if (it == infos_.end()) throw CheckpointError("synthetic checkpoint: no tensor " + name);
    return it->second;
  }
  std::string format() const override { return "synthetic"; }
  std::vector<std::string> files() const override { return {}; }
  uint64_t total_bytes() const override { return arena_.size() * 2; }

 private:
  std::filesystem::path dir_;
  std::vector<uint16_t> arena_;
  std::map<std::string, TensorInfo> infos_;
};

}  // namespace

std::shared_ptr<Checkpoint> make_synthetic_checkpoint(const ModelConfig& config, uint64_t seed) {
  return std::make_shared<SyntheticCheckpoint>(config, seed);
}

}  // namespace mlra
