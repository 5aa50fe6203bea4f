// HostStagedCommunicator: chunks of staging capacity, each a round trip device -> host -> device
// around a host sum; bf16 chunks are widened into an f32 scratch of the same element count (fixed
// at construction: a recorded reduction may run long after the call that recorded it).
#include "kernels/host_staged_communicator.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

namespace mlra {
namespace {

class HostMemoryStaging final : public HostStaging {
 public:
  explicit HostMemoryStaging(size_t capacity) : buffer_(capacity) {}
  char* buffer() override { return buffer_.data(); }
  size_t capacity() const override { return buffer_.size(); }
  void round_trip(void* data, size_t bytes, std::function<void()> reduce) override {
    if (bytes > buffer_.size()) throw std::invalid_argument("host staging: chunk over capacity");
    std::memcpy(buffer_.data(), data, bytes);
    reduce();
    std::memcpy(data, buffer_.data(), bytes);
  }

 private:
  std::vector<char> buffer_;
};

class HostStagedCommunicator final : public Communicator {
 public:
  HostStagedCommunicator(std::unique_ptr<Communicator> host, std::unique_ptr<HostStaging> staging)
      : host_(std::move(host)), staging_(std::move(staging)) {
    if (!host_ || !staging_) throw std::invalid_argument("host-staged communicator: missing part");
    if (staging_->capacity() < sizeof(float))
      throw std::invalid_argument("host-staged communicator: staging holds no element");
    wide_.resize(staging_->capacity() / sizeof(uint16_t));
  }
  int rank() const override { return host_->rank(); }
  int size() const override { return host_->size(); }

  void all_reduce_sum(void* data, int64_t n, DType dtype) override {
    if (dtype != DType::kF32 && dtype != DType::kBF16)
      throw std::invalid_argument(std::string("host-staged all-reduce: f32 and bf16 only, not ") +
                                  dtype_name(dtype));
    if (n < 0) throw std::invalid_argument("host-staged all-reduce: negative length");
    const size_t elem = dtype_size(dtype);
    const int64_t chunk = int64_t(staging_->capacity() / elem);
    char* bytes = static_cast<char*>(data);
    for (int64_t off = 0; off < n; off += chunk) {
      const int64_t m = std::min(chunk, n - off);
      staging_->round_trip(bytes + size_t(off) * elem, size_t(m) * elem,
                           [this, m, dtype] { reduce_staged(m, dtype); });
    }
  }

 private:
  // Sums the m staged elements over ranks, in place in the staging buffer.
  void reduce_staged(int64_t m, DType dtype) {
    if (dtype == DType::kF32) {
      host_->all_reduce_sum(staging_->buffer(), m, DType::kF32);
      return;
    }
    auto* half = reinterpret_cast<uint16_t*>(staging_->buffer());
    for (int64_t i = 0; i < m; ++i) wide_[size_t(i)] = bf16_to_f32(half[i]);
    host_->all_reduce_sum(wide_.data(), m, DType::kF32);
    for (int64_t i = 0; i < m; ++i) half[i] = f32_to_bf16(wide_[size_t(i)]);
  }

  std::unique_ptr<Communicator> host_;
  std::unique_ptr<HostStaging> staging_;
  std::vector<float> wide_;  // f32 copy of a staged bf16 chunk
};

}  // namespace

float bf16_to_f32(uint16_t h) {
  const uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);                                         // nearest even
  return uint16_t(u >> 16);
}

std::unique_ptr<HostStaging> make_host_memory_staging(size_t capacity) {
  return std::make_unique<HostMemoryStaging>(capacity);
}

std::unique_ptr<Communicator> make_host_staged_communicator(std::unique_ptr<Communicator> host,
                                                            std::unique_ptr<HostStaging> staging) {
  return std::make_unique<HostStagedCommunicator>(std::move(host), std::move(staging));
}

}  // namespace mlra
