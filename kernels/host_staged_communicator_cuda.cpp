// CudaHostStaging: a pinned staging buffer and copies on the backend's stream. Outside a
// recording the host sum runs on the calling thread after a stream synchronize; inside one it is
// a host-function node (the only way a host sum can sit in a CUDA graph), which replays block on
// the peers' barrier like any host call. A host node cannot throw, so a failed sum ends the
// process: its peers and the frontend see the rank vanish, as with a crash.
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <stdexcept>
#include <vector>

#include "kernels/cuda_backend.h"
#include "kernels/cuda_check.h"
#include "kernels/host_staged_communicator.h"

namespace mlra {
namespace {

void CUDART_CB run_recorded_reduce(void* fn) {
  try {
    (*static_cast<std::function<void()>*>(fn))();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "host-staged all-reduce failed in a graph replay: %s\n", e.what());
    std::abort();
  }
}

class CudaHostStaging final : public HostStaging {
 public:
  CudaHostStaging(Backend& backend, size_t capacity)
      : stream_(cuda_stream_of(backend)), capacity_(capacity) {
    MLRA_CUDA_CHECK(cudaStreamGetDevice(stream_, &device_));
    MLRA_CUDA_CHECK(cudaSetDevice(device_));
    void* p = nullptr;
    MLRA_CUDA_CHECK(cudaMallocHost(&p, capacity_));
    buffer_ = static_cast<char*>(p);
  }
  ~CudaHostStaging() override {
    cudaSetDevice(device_);
    cudaStreamSynchronize(stream_);
    cudaFreeHost(buffer_);
  }
  char* buffer() override { return buffer_; }
  size_t capacity() const override { return capacity_; }

  void round_trip(void* data, size_t bytes, std::function<void()> reduce) override {
    if (bytes > capacity_) throw std::invalid_argument("cuda host staging: chunk over capacity");
    MLRA_CUDA_CHECK(cudaSetDevice(device_));
    cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    MLRA_CUDA_CHECK(cudaStreamIsCapturing(stream_, &status));
    MLRA_CUDA_CHECK(cudaMemcpyAsync(buffer_, data, bytes, cudaMemcpyDeviceToHost, stream_));
    if (status == cudaStreamCaptureStatusActive) {
      recorded_.push_back(std::make_unique<std::function<void()>>(std::move(reduce)));
      MLRA_CUDA_CHECK(cudaLaunchHostFunc(stream_, run_recorded_reduce, recorded_.back().get()));
    } else {
      MLRA_CUDA_CHECK(cudaStreamSynchronize(stream_));
      reduce();
    }
    MLRA_CUDA_CHECK(cudaMemcpyAsync(data, buffer_, bytes, cudaMemcpyHostToDevice, stream_));
  }

 private:
  cudaStream_t stream_;
  int device_ = 0;
  size_t capacity_;
  char* buffer_ = nullptr;
  // Reductions recorded into graphs: alive as long as this staging (a few per layer and size).
  std::vector<std::unique_ptr<std::function<void()>>> recorded_;
};

}  // namespace

std::unique_ptr<HostStaging> make_cuda_host_staging(Backend& backend, size_t capacity) {
  return std::make_unique<CudaHostStaging>(backend, capacity);
}

}  // namespace mlra
