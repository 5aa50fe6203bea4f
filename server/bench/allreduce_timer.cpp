// See allreduce_timer.h. Times whole group calls from the host (launch + completion on every
// device), which is what a decode step waits for between layers.
#include "server/bench/allreduce_timer.h"

#include <algorithm>
#include <chrono>
#include <vector>

#ifdef MLRA_HAVE_CUDA
#include <cuda_runtime.h>
#include <nccl.h>
#endif

namespace mlra {

#ifdef MLRA_HAVE_CUDA
int visible_gpus() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) return 0;
  return n;
}

double allreduce_median_us(int gpus, int64_t bytes, int iters) {
  if (gpus < 2 || visible_gpus() < gpus || bytes <= 0) return -1;
  const size_t n = static_cast<size_t>(gpus);
  std::vector<int> devs(n);
  for (int i = 0; i < gpus; ++i) devs[size_t(i)] = i;
  std::vector<ncclComm_t> comms(n);
  if (ncclCommInitAll(comms.data(), gpus, devs.data()) != ncclSuccess) return -1;
  std::vector<cudaStream_t> streams(n);
  std::vector<void*> bufs(n);
  for (int i = 0; i < gpus; ++i) {
    cudaSetDevice(i);
    cudaStreamCreateWithFlags(&streams[size_t(i)], cudaStreamNonBlocking);
    cudaMalloc(&bufs[size_t(i)], size_t(bytes));
    cudaMemset(bufs[size_t(i)], 0, size_t(bytes));  // bf16 zeros: the sum stays finite
  }
  const size_t count = size_t(bytes) / 2;
  auto once = [&] {
    ncclGroupStart();
    for (int i = 0; i < gpus; ++i)
      ncclAllReduce(bufs[size_t(i)], bufs[size_t(i)], count, ncclBfloat16, ncclSum,
                    comms[size_t(i)], streams[size_t(i)]);
    ncclGroupEnd();
    for (int i = 0; i < gpus; ++i) {
      cudaSetDevice(i);
      cudaStreamSynchronize(streams[size_t(i)]);
    }
  };
  for (int w = 0; w < 5; ++w) once();
  std::vector<double> us;
  for (int it = 0; it < iters; ++it) {
    const auto t0 = std::chrono::steady_clock::now();
    once();
    us.push_back(
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
  }
  for (int i = 0; i < gpus; ++i) {
    cudaSetDevice(i);
    cudaFree(bufs[size_t(i)]);
    cudaStreamDestroy(streams[size_t(i)]);
    ncclCommDestroy(comms[size_t(i)]);
  }
  std::sort(us.begin(), us.end());
  return us[us.size() / 2];
}
#else
int visible_gpus() {
  return 0;
}
double allreduce_median_us(int, int64_t, int) {
  return -1;
}
#endif

}  // namespace mlra
