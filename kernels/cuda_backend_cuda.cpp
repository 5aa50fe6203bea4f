// CUDA backend: bf16 weights, activations and cache, f32 residual and norm math; cuBLAS for the
// matrix products (row-major views mapped onto column-major GEMMs), our kernels for the rest.
// Every op is enqueued on one stream per backend; device memory comes from the stream-ordered
// pool (cudaMallocAsync), so the many small per-layer temporaries cost no device synchronization.
// Invariant: every op first makes this backend's device current (ranks run on separate threads).
// This file: construction, memory, transfers, recording and op timing; the class is declared in
// cuda_backend_impl.h, its ops live in cuda_backend_{linear,elementwise,attention,latent}_cuda.cpp.
#include <cuda_fp16.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <tuple>
#include <vector>

#include "kernels/backend.h"
#include "kernels/cuda_backend.h"
#include "kernels/cuda_backend_impl.h"
#include "kernels/cuda_check.h"
#include "kernels/cuda_ops.h"

namespace mlra::cuda_backend_detail {
namespace {

// A CUDA graph recorded on the backend's stream; replays on that stream.
class CudaGraph final : public CapturedOps {
 public:
  CudaGraph(int device, cudaStream_t stream, cudaGraph_t graph)
      : device_(device), stream_(stream), graph_(graph) {
    MLRA_CUDA_CHECK(cudaGraphInstantiate(&exec_, graph_, 0));
  }
  ~CudaGraph() override {
    cudaSetDevice(device_);
    cudaStreamSynchronize(stream_);  // a replay may still be in flight
    if (exec_) cudaGraphExecDestroy(exec_);
    cudaGraphDestroy(graph_);
  }
  void replay() override {
    MLRA_CUDA_CHECK(cudaSetDevice(device_));
    MLRA_CUDA_CHECK(cudaGraphLaunch(exec_, stream_));
  }

 private:
  int device_;
  cudaStream_t stream_;
  cudaGraph_t graph_;
  cudaGraphExec_t exec_ = nullptr;
};

uint16_t f32_to_bf16_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);                                         // round to nearest even
  return uint16_t(u >> 16);
}

}  // namespace

CudaBackend::CudaBackend(int device, const KernelOptions& options)
    : gemv_max_rows_(options.gemv_max_rows),
      gemv_k_tail_(options.gemv_k_tail == 1),
      latent_uk_t_(options.latent_uk_t != 0),
      state_(std::make_shared<StreamState>()),
      attention_(device, options) {
  state_->device = device;
  MLRA_CUDA_CHECK(cudaSetDevice(device));
  MLRA_CUDA_CHECK(cudaStreamCreateWithFlags(&state_->stream, cudaStreamNonBlocking));
  cudaMemPool_t pool;
  MLRA_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device));
  uint64_t keep = UINT64_MAX;  // keep freed blocks for reuse instead of returning them
  MLRA_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep));
  MLRA_CUDA_CHECK(cublasCreate(&cublas_));
  MLRA_CUDA_CHECK(cublasSetStream(cublas_, state_->stream));
  // An explicit workspace: cuBLAS must not allocate while a graph is being recorded.
  MLRA_CUDA_CHECK(cudaMalloc(&cublas_workspace_, kCublasWorkspaceBytes));
  MLRA_CUDA_CHECK(cublasSetWorkspace(cublas_, cublas_workspace_, kCublasWorkspaceBytes));
  MLRA_CUDA_CHECK(cudaEventCreateWithFlags(&staging_done_, cudaEventDisableTiming));
  cudaDeviceProp prop{};
  MLRA_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  name_ = std::string("cuda:") + std::to_string(device) + " (" + prop.name + ")";
  if (options.mlp_block == 1) mlp_block_ = std::make_unique<cuda::MlpBlockKernel>(device);
  if (options.attn_block == 1) attn_block_ = std::make_unique<cuda::AttnBlockKernel>(device);
}

CudaBackend::~CudaBackend() {
  cudaSetDevice(state_->device);
  cudaStreamSynchronize(state_->stream);
  for (const auto& t : timed_) {
    cudaEventDestroy(std::get<1>(t));
    cudaEventDestroy(std::get<2>(t));
  }
  for (cudaEvent_t e : spare_events_) cudaEventDestroy(e);
  cublasDestroy(cublas_);
  cudaFree(cublas_workspace_);
  if (staging_) cudaFreeHost(staging_);
  cudaEventDestroy(staging_done_);
}

Tensor CudaBackend::alloc(const std::vector<int64_t>& shape, DType dtype) {
  activate();
  Tensor t;
  t.dtype = dtype;
  t.device = DeviceKind::kCuda;
  t.shape = shape;
  void* p = nullptr;
  MLRA_CUDA_CHECK(cudaMallocAsync(&p, std::max<size_t>(t.bytes(), 256), stream()));
  t.data = p;
  std::shared_ptr<StreamState> st = state_;
  t.owner = std::shared_ptr<void>(p, [st](void* q) {
    cudaSetDevice(st->device);
    cudaFreeAsync(q, st->stream);
  });
  return t;
}

void CudaBackend::upload_f32(Tensor& dst, const float* src) {
  activate();
  const size_t n = size_t(dst.numel());
  switch (dst.dtype) {
    case DType::kF32:
      return upload(dst, src, n * sizeof(float));
    case DType::kBF16: {
      std::vector<uint16_t> h(n);
      for (size_t i = 0; i < n; ++i) h[i] = f32_to_bf16_bits(src[i]);
      return upload(dst, h.data(), n * 2);
    }
    case DType::kF16: {
      std::vector<__half> h(n);
      for (size_t i = 0; i < n; ++i) h[i] = __float2half(src[i]);
      return upload(dst, h.data(), n * 2);
    }
    default:
      throw std::invalid_argument("cuda backend: upload_f32 to a non-float tensor");
  }
}

void CudaBackend::upload(Tensor& dst, const void* src, size_t bytes) {
  activate();
  MLRA_REQUIRE(bytes <= dst.bytes(), "upload overflows tensor");
  MLRA_CUDA_CHECK(cudaMemcpyAsync(dst.data, src, bytes, cudaMemcpyHostToDevice, stream()));
  MLRA_CUDA_CHECK(cudaStreamSynchronize(stream()));  // src may be freed once we return
}

// Copies src into pinned staging memory and enqueues the device copy from there. The staging
// area is a bump allocator that restarts once the stream has consumed it.
void CudaBackend::upload_async(Tensor& dst, const void* src, size_t bytes) {
  activate();
  MLRA_REQUIRE(bytes <= dst.bytes(), "upload overflows tensor");
  if (bytes == 0) return;
  const size_t need = (bytes + 255) / 256 * 256;
  if (staging_used_ + need > staging_bytes_) {
    MLRA_CUDA_CHECK(cudaEventSynchronize(staging_done_));  // every earlier staged copy is done
    staging_used_ = 0;
    if (need > staging_bytes_) {
      if (staging_) MLRA_CUDA_CHECK(cudaFreeHost(staging_));
      staging_bytes_ = std::max(need, size_t(4) << 20);
      MLRA_CUDA_CHECK(cudaMallocHost(&staging_, staging_bytes_));
    }
  }
  char* slot = static_cast<char*>(staging_) + staging_used_;
  std::memcpy(slot, src, bytes);
  staging_used_ += need;
  MLRA_CUDA_CHECK(cudaMemcpyAsync(dst.data, slot, bytes, cudaMemcpyHostToDevice, stream()));
  MLRA_CUDA_CHECK(cudaEventRecord(staging_done_, stream()));
}

void CudaBackend::download_f32(const MatView& src, float* dst) {
  activate();
  if (src.rows == 0 || src.cols == 0) return;
  MatView from = src;
  Tensor tmp;
  if (src.dtype != DType::kF32) {
    tmp = alloc({src.rows, src.cols}, DType::kF32);
    from = as_mat(tmp, src.cols);
    cuda::launch_convert(src, from, stream());
  }
  MLRA_CUDA_CHECK(cudaMemcpy2DAsync(dst, src.cols * sizeof(float), from.data,
                                    from.ld * sizeof(float), src.cols * sizeof(float), src.rows,
                                    cudaMemcpyDeviceToHost, stream()));
  MLRA_CUDA_CHECK(cudaStreamSynchronize(stream()));
}

void CudaBackend::synchronize() {
  activate();
  MLRA_CUDA_CHECK(cudaStreamSynchronize(stream()));
}

// Thread-local mode: other ranks' threads may allocate or synchronize while this one records.
void CudaBackend::begin_capture() {
  activate();
  MLRA_CUDA_CHECK(cudaStreamBeginCapture(stream(), cudaStreamCaptureModeThreadLocal));
}

std::unique_ptr<CapturedOps> CudaBackend::end_capture() {
  activate();
  cudaGraph_t graph = nullptr;
  MLRA_CUDA_CHECK(cudaStreamEndCapture(stream(), &graph));
  return std::make_unique<CudaGraph>(state_->device, stream(), graph);
}

void CudaBackend::set_op_timing(bool on) {
  take_op_times();
  op_timing_ = on;
}

Backend::OpTimes CudaBackend::take_op_times() {
  activate();
  OpTimes t;
  t.cublas_calls = cublas_calls_;
  cublas_calls_ = 0;
  if (timed_.empty()) return t;
  MLRA_CUDA_CHECK(cudaStreamSynchronize(stream()));
  for (const auto& [field, start, stop] : timed_) {
    float ms = 0.0f;
    MLRA_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    t.*field += ms;
    spare_events_.push_back(start);
    spare_events_.push_back(stop);
  }
  timed_.clear();
  return t;
}

DeviceMemory CudaBackend::memory() const {
  activate();
  size_t free_b = 0, total_b = 0;
  MLRA_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  return {int64_t(free_b), int64_t(total_b)};
}

}  // namespace mlra::cuda_backend_detail

namespace mlra {

std::unique_ptr<Backend> make_cuda_backend(int device, const KernelOptions& options) {
  if (const std::string why = kernel_options_error(options); !why.empty())
    throw std::invalid_argument("cuda backend: kernel options: " + why);
  return std::make_unique<cuda_backend_detail::CudaBackend>(device, options);
}

cudaStream_t cuda_stream_of(Backend& b) {
  auto* c = dynamic_cast<cuda_backend_detail::CudaBackend*>(&b);
  if (!c) throw std::invalid_argument("cuda_stream_of: not a CUDA backend");
  return c->stream();
}

}  // namespace mlra
