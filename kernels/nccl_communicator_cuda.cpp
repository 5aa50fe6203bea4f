// NcclCommunicator: ncclCommInitRank on the rank's device, in-place ncclAllReduce(sum) on the
// backend's stream. NCCL sums in its own (ring/tree) order, identical on every rank for a given
// communicator, so all ranks still see bit-identical results.
#include "kernels/nccl_communicator.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <cstring>
#include <string>

#include "kernels/cuda_backend.h"

namespace mlra {
namespace {

void check(ncclResult_t r, const char* what) {
  if (r != ncclSuccess) throw NcclError(std::string(what) + ": " + ncclGetErrorString(r));
}

ncclDataType_t nccl_type(DType t) {
  switch (t) {
    case DType::kF32:
      return ncclFloat32;
    case DType::kBF16:
      return ncclBfloat16;
    case DType::kF16:
      return ncclFloat16;
    default:
      throw NcclError(std::string("nccl all-reduce: unsupported dtype ") + dtype_name(t));
  }
}

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(const ncclUniqueId& id, int rank, int size, int device, cudaStream_t stream)
      : rank_(rank), size_(size), stream_(stream) {
    if (cudaSetDevice(device) != cudaSuccess)
      throw NcclError("nccl: cannot select GPU " + std::to_string(device));
    check(ncclCommInitRank(&comm_, size, id, rank), "ncclCommInitRank");
  }
  ~NcclCommunicator() override {
    if (comm_) ncclCommDestroy(comm_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void all_reduce_sum(void* data, int64_t n, DType dtype) override {
    if (n <= 0) return;
    check(ncclAllReduce(data, data, size_t(n), nccl_type(dtype), ncclSum, comm_, stream_),
          "ncclAllReduce");
  }

 private:
  int rank_, size_;
  cudaStream_t stream_;
  ncclComm_t comm_ = nullptr;
};

}  // namespace

std::vector<char> make_nccl_unique_id() {
  ncclUniqueId id;
  check(ncclGetUniqueId(&id), "ncclGetUniqueId");
  const char* p = reinterpret_cast<const char*>(&id);
  return std::vector<char>(p, p + sizeof(id));
}

std::unique_ptr<Communicator> make_nccl_communicator(const std::vector<char>& id_bytes, int rank,
                                                     int size, int device, Backend& backend) {
  ncclUniqueId id;
  if (id_bytes.size() != sizeof(id))
    throw NcclError("nccl unique id of " + std::to_string(id_bytes.size()) + " bytes, expected " +
                    std::to_string(sizeof(id)));
  std::memcpy(&id, id_bytes.data(), sizeof(id));
  return std::make_unique<NcclCommunicator>(id, rank, size, device, cuda_stream_of(backend));
}

}  // namespace mlra
