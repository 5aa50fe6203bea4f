// All-reduce through host memory, for TP ranks that share a GPU (NCCL refuses two ranks on one
// device). Each chunk of a device buffer is copied into a host staging buffer, widened to f32,
// summed over ranks by a host communicator (the shared-memory one between worker processes, which
// sums in rank order, so every rank gets the same bits), narrowed back and copied to the device.
// Correct, not fast: two copies and one host barrier per chunk. Every rank must use the same
// staging capacity (it sets the chunks, and ranks must reduce the same chunks in lockstep).
#pragma once

#include <cstddef>
#include <functional>
#include <memory>

#include "kernels/backend.h"
#include "kernels/communicator.h"

namespace mlra {

// Moves bytes between a device buffer and a host staging buffer, in order with the device's work.
class HostStaging {
 public:
  virtual ~HostStaging() = default;
  virtual char* buffer() = 0;  // host memory, capacity() bytes
  virtual size_t capacity() const = 0;
  // Device [data, + bytes) -> buffer(), then reduce() on the host, then buffer() -> device
  // [data, + bytes), all after the work queued before on the device; bytes <= capacity().
  virtual void round_trip(void* data, size_t bytes, std::function<void()> reduce) = 0;
};

inline constexpr size_t kHostStagingBytes = size_t(8) << 20;

// For host buffers (CPU backend): plain copies, reduce() runs at once. The CPU analogue of the
// GPU path, so CI runs the same chunking, conversion and lockstep without a GPU.
std::unique_ptr<HostStaging> make_host_memory_staging(size_t capacity = kHostStagingBytes);

// For a CUDA backend's buffers (defined only in CUDA builds, host_staged_communicator_cuda.cpp):
// pinned staging and copies on the backend's stream. Eagerly, round_trip waits for the stream
// and reduces on the calling thread; while the stream records a graph, the reduction becomes a
// host-function node (cudaLaunchHostFunc), so decode graphs work: each replay reduces again.
// Recorded reductions belong to the staging, which must outlive every graph that recorded it.
std::unique_ptr<HostStaging> make_cuda_host_staging(Backend& backend,
                                                    size_t capacity = kHostStagingBytes);

// Rank host->rank() of host->size(): sums f32 and bf16 buffers through `staging` and the host
// communicator `host` (f32 host buffers). bf16 sums are rounded once, to nearest even, after the
// f32 sum. Throws std::invalid_argument for other dtypes or n < 0.
std::unique_ptr<Communicator> make_host_staged_communicator(std::unique_ptr<Communicator> host,
                                                            std::unique_ptr<HostStaging> staging);

// bf16 <-> f32 on the host (round to nearest even; NaN stays NaN).
float bf16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float f);

}  // namespace mlra
