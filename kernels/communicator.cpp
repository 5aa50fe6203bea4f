// The TP=1 communicator (a sum over one rank is the identity) and the choice of communicator
// from the ranks' device placement.
#include "kernels/communicator.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace mlra {
namespace {

class SingleRankCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void all_reduce_sum(void*, int64_t, DType) override {}
};

}  // namespace

std::unique_ptr<Communicator> make_single_rank_communicator() {
  return std::make_unique<SingleRankCommunicator>();
}

const char* communicator_kind_name(CommunicatorKind kind) {
  switch (kind) {
    case CommunicatorKind::kSingleRank:
      return "single-rank";
    case CommunicatorKind::kSharedMemory:
      return "shared-memory";
    case CommunicatorKind::kNccl:
      return "nccl";
    case CommunicatorKind::kHostStaged:
      return "host-staged";
  }
  return "?";
}

std::vector<int32_t> tp_device_list(const std::vector<int32_t>& configured, int32_t first_device,
                                    int tp) {
  if (tp < 1) throw std::invalid_argument("tp must be >= 1");
  if (configured.empty()) {
    if (first_device < 0) throw std::invalid_argument("device must be >= 0");
    std::vector<int32_t> devices(static_cast<size_t>(tp));
    for (int r = 0; r < tp; ++r) devices[size_t(r)] = first_device + r;
    return devices;
  }
  if (int(configured.size()) != tp)
    throw std::invalid_argument("tp_devices lists " + std::to_string(configured.size()) +
                                " devices for tp " + std::to_string(tp) + ": one device per rank");
  for (size_t r = 0; r < configured.size(); ++r)
    if (configured[r] < 0)
      throw std::invalid_argument("tp_devices[" + std::to_string(r) + "] is " +
                                  std::to_string(configured[r]) + ": devices are >= 0");
  return configured;
}

CommunicatorKind communicator_kind(DeviceKind device, const std::vector<int32_t>& devices) {
  if (devices.size() <= 1) return CommunicatorKind::kSingleRank;
  std::vector<int32_t> sorted = devices;
  std::sort(sorted.begin(), sorted.end());
  if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end())
    return CommunicatorKind::kHostStaged;
  return device == DeviceKind::kCuda ? CommunicatorKind::kNccl : CommunicatorKind::kSharedMemory;
}

int ranks_sharing_device(const std::vector<int32_t>& devices, int rank) {
  if (rank < 0 || size_t(rank) >= devices.size())
    throw std::invalid_argument("rank " + std::to_string(rank) + " outside the device list");
  return int(std::count(devices.begin(), devices.end(), devices[size_t(rank)]));
}

}  // namespace mlra
