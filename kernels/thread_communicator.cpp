// Thread communicator: post pointers, barrier, every rank sums all buffers in rank order into a
// private copy, barrier (nobody still reads), write back. Float32 host buffers only.
#include "kernels/thread_communicator.h"

#include <barrier>
#include <cstring>
#include <stdexcept>

namespace mlra {
namespace {

struct SharedState {
  explicit SharedState(int n) : buffers(n, nullptr), sync(n) {}
  std::vector<float*> buffers;
  std::barrier<> sync;
};

class ThreadCommunicator final : public Communicator {
 public:
  ThreadCommunicator(std::shared_ptr<SharedState> state, int rank)
      : state_(std::move(state)), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return int(state_->buffers.size()); }
  void all_reduce_sum(void* data, int64_t n, DType dtype) override {
    if (dtype != DType::kF32) throw std::invalid_argument("thread communicator: float32 only");
    state_->buffers[rank_] = static_cast<float*>(data);
    state_->sync.arrive_and_wait();
    sum_.assign(size_t(n), 0.0f);
    for (float* buf : state_->buffers)
      for (int64_t i = 0; i < n; ++i) sum_[i] += buf[i];
    state_->sync.arrive_and_wait();
    std::memcpy(data, sum_.data(), size_t(n) * sizeof(float));
  }

 private:
  std::shared_ptr<SharedState> state_;
  int rank_;
  std::vector<float> sum_;
};

}  // namespace

std::vector<std::unique_ptr<Communicator>> make_thread_communicators(int size) {
  auto state = std::make_shared<SharedState>(size);
  std::vector<std::unique_ptr<Communicator>> out;
  for (int r = 0; r < size; ++r) out.push_back(std::make_unique<ThreadCommunicator>(state, r));
  return out;
}

}  // namespace mlra
