// Collective communication between the TP ranks of one model. NCCL between GPU workers on
// distinct devices, a host-staged sum for GPU workers that share a device, shared memory between
// CPU worker processes, threads in tests, and a no-op for TP=1. Every rank calls every collective
// in the same order (lockstep is the control channel's job) and every rank uses the same kind.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

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

// How the ranks of one model sum their partial outputs.
enum class CommunicatorKind {
  kSingleRank,    // TP=1
  kSharedMemory,  // CPU ranks: a shared-memory segment (shm_communicator.h)
  kNccl,          // GPU ranks, one device each (nccl_communicator.h)
  kHostStaged,    // ranks sharing a device: device -> host, shared-memory sum, host -> device
};
const char* communicator_kind_name(CommunicatorKind kind);

// The device of every rank: `configured` (one entry per rank, each >= 0) when not empty, else
// rank r on first_device + r. Throws std::invalid_argument naming the bad entry.
std::vector<int32_t> tp_device_list(const std::vector<int32_t>& configured, int32_t first_device,
                                    int tp);
// The kind for ranks on `devices` (rank r on devices[r]). NCCL refuses two ranks on one device,
// so as soon as any two ranks share one, every rank takes the host-staged path (CPU ranks too:
// its CPU analogue, with plain memory copies for the device ones).
CommunicatorKind communicator_kind(DeviceKind device, const std::vector<int32_t>& devices);
// Ranks placed on devices[rank], itself included: each takes this share of the device's budget.
int ranks_sharing_device(const std::vector<int32_t>& devices, int rank);

}  // namespace mlra
