// Shared-memory all-reduce between CPU worker processes on one host. The frontend creates a POSIX
// shared-memory segment (ShmSegment) holding a process-shared barrier and two sets of per-rank
// slots; workers open it by name. Every rank sums the slots in rank order, so all ranks get
// bit-identical results; buffers larger than a slot are reduced chunk by chunk.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "kernels/communicator.h"

namespace mlra {

struct ShmError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Owner side of the segment: creates, initialises, and (at the latest in the destructor) unlinks.
class ShmSegment {
 public:
  // A fresh uniquely named segment for `size` ranks with slots of `slot_bytes` each.
  ShmSegment(int size, size_t slot_bytes = size_t(1) << 20);
  ~ShmSegment();
  ShmSegment(const ShmSegment&) = delete;
  ShmSegment& operator=(const ShmSegment&) = delete;

  const std::string& name() const { return name_; }
  // Removes the name once every worker has opened it: no leftover in /dev/shm after a crash.
  void unlink();

 private:
  std::string name_;
  void* base_ = nullptr;
  size_t bytes_ = 0;
  bool linked_ = false;
};

// Rank `rank` of `size` on the segment `name` (created by ShmSegment with the same size).
// Float32 host buffers only; every rank must call all_reduce_sum in the same order.
std::unique_ptr<Communicator> open_shm_communicator(const std::string& name, int rank, int size);

}  // namespace mlra
