// Collective communication between the TP ranks of one model. NCCL between GPU workers, shared
// memory between CPU worker processes, threads in tests, and a no-op for TP=1. Every rank calls
// every collective in the same order (lockstep is the control channel's job).
#pragma once

#include <cstdint>
#include <memory>

#include "kernels/tensor.h"

namespace mlra {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // In place sum over ranks of a contiguous buffer of n elements (on the backend's device).
  virtual void all_reduce_sum(void* data, int64_t n, DType dtype) = 0;
};

std::unique_ptr<Communicator> make_single_rank_communicator();

}  // namespace mlra
