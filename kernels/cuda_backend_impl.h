// The CUDA backend's class, private to it: included only by the backend's own files, which define
// its methods by concept (cuda_backend_cuda.cpp: construction, memory, transfers, recording, op
// timing; cuda_backend_{linear,elementwise,attention,latent}_cuda.cpp: the ops). Everyone else
// reaches it through make_cuda_backend (backend.h) and cuda_stream_of (cuda_backend.h).
// Invariant: every op first makes this backend's device current (activate()).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/attn_block.h"
#include "kernels/backend.h"
#include "kernels/cuda_check.h"
#include "kernels/mlp_block.h"
#include "kernels/paged_attention_cuda.h"

namespace mlra::cuda_backend_detail {

// Owns the stream; shared by every tensor's deleter so frees stay valid after the backend dies.
struct StreamState {
  int device = 0;
  cudaStream_t stream = nullptr;
  ~StreamState() {
    if (stream) {
      cudaSetDevice(device);
      cudaStreamSynchronize(stream);
      cudaStreamDestroy(stream);
    }
  }
};

class CudaBackend final : public Backend {
 public:
  CudaBackend(int device, const KernelOptions& options);
  ~CudaBackend() override;

  cudaStream_t stream() const { return state_->stream; }

  DeviceKind kind() const override { return DeviceKind::kCuda; }
  std::string name() const override { return name_; }
  DType weight_dtype() const override { return DType::kBF16; }
  DType act_dtype() const override { return DType::kBF16; }
  DType cache_dtype() const override { return DType::kBF16; }

  // cuda_backend_cuda.cpp
  Tensor alloc(const std::vector<int64_t>& shape, DType dtype) override;
  void upload_f32(Tensor& dst, const float* src) override;
  void upload(Tensor& dst, const void* src, size_t bytes) override;
  void upload_async(Tensor& dst, const void* src, size_t bytes) override;
  void download_f32(const MatView& src, float* dst) override;
  void synchronize() override;
  void begin_capture() override;
  std::unique_ptr<CapturedOps> end_capture() override;
  void set_op_timing(bool on) override;
  OpTimes take_op_times() override;
  DeviceMemory memory() const override;
  bool supports_capture() const override { return true; }

  // cuda_backend_linear_cuda.cpp
  void linear(const MatView& x, const MatView& w, const MatView& y, float alpha,
              float beta) override;
  void linear_batched(const MatView& x, int64_t x_stride, const MatView& w, int64_t w_stride,
                      bool w_out_by_in, const MatView& y, int64_t y_stride, int64_t batch,
                      float alpha, float beta) override;
  void linear_swiglu(const MatView& x, const MatView& w12, const MatView& out) override;
  void mlp_block(const MlpBlockArgs& m) override;

  // cuda_backend_elementwise_cuda.cpp
  void embed(const int32_t* tokens, int64_t n, const MatView& table, const MatView& out) override;
  void rms_norm(const MatView& x, const Tensor& w, float eps, float scale,
                const MatView& out) override;
  void rms_norm_groups(const MatView& x, const Tensor& w, int64_t groups, float eps, float scale,
                       const MatView& out) override;
  void add_rms_norm(const MatView& delta, const MatView& acc, const Tensor& w, float eps,
                    const MatView& out) override;
  void rope(const MatView& x, int64_t n_heads, int64_t head_stride, int64_t rot_offset,
            int64_t rot_dim, const int32_t* positions, float base) override;
  void silu_mul(const MatView& a, const MatView& b, const MatView& out) override;
  void sigmoid_mul(const MatView& gate, const MatView& x) override;
  void add(const MatView& x, const MatView& acc) override;
  void scale(const MatView& y, float alpha) override;

  // cuda_backend_attention_cuda.cpp
  void cache_write(const MatView& src, const int32_t* slots, const PagedCacheView& cache,
                   int32_t col_offset) override;
  void cache_gather(const PagedCacheView& cache, const int32_t* slots, int64_t n,
                    int32_t col_offset, const MatView& out) override;
  void begin_step() override;
  void end_step() override;
  void paged_attention(const PagedAttentionArgs& args) override;
  // FP8 caches: written by the quantizing write, read by the generic attention kernel.
  bool supports_cache_encoding(CacheEncoding) const override { return true; }

  // cuda_backend_latent_cuda.cpp
  bool copy_rows_batched(const MatView& src, int64_t src_stride, const MatView& dst,
                         int64_t dst_stride, int64_t batch) override;
  void attn_block(const AttnBlockArgs& a) override;
  void latent_cache_write(const MatView& row, const Tensor& w, int64_t groups, float eps,
                          float scale, int64_t rot_dim, const int32_t* positions, float rope_base,
                          const int32_t* slots, const PagedCacheView& cache) override;
  void latent_queries(const MatView& q_nope, const MatView& cq, const MatView& rope_w,
                      const std::vector<LatentUnitView>& units, int64_t dn, int64_t dr,
                      int64_t width, const int32_t* positions, float rope_base,
                      const MatView& qv) override;
  LatentUkLayouts latent_uk_layouts(int64_t n_units, int64_t width) const override;
  void latent_up_project(const MatView& z, const std::vector<LatentUnitView>& units, int64_t dn,
                         int64_t width, float alpha, const MatView& o) override;

 private:
  void activate() const { MLRA_CUDA_CHECK(cudaSetDevice(state_->device)); }

  // Brackets one op with events when op timing is on (and the stream is not being recorded).
  class TimedOp {
   public:
    TimedOp(CudaBackend* b, double OpTimes::*field) {
      if (!b->op_timing_) return;
      cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
      MLRA_CUDA_CHECK(cudaStreamIsCapturing(b->stream(), &status));
      if (status != cudaStreamCaptureStatusNone) return;
      b_ = b;
      field_ = field;
      start_ = b->take_event();
      MLRA_CUDA_CHECK(cudaEventRecord(start_, b->stream()));
    }
    ~TimedOp() {
      if (!b_) return;
      cudaEvent_t stop = b_->take_event();
      cudaEventRecord(stop, b_->stream());
      b_->timed_.emplace_back(field_, start_, stop);
    }
    TimedOp(const TimedOp&) = delete;
    TimedOp& operator=(const TimedOp&) = delete;

   private:
    CudaBackend* b_ = nullptr;
    double OpTimes::*field_ = nullptr;
    cudaEvent_t start_ = nullptr;
  };
  cudaEvent_t take_event() {
    if (!spare_events_.empty()) {
      cudaEvent_t e = spare_events_.back();
      spare_events_.pop_back();
      return e;
    }
    cudaEvent_t e = nullptr;
    MLRA_CUDA_CHECK(cudaEventCreate(&e));
    return e;
  }

  // cuda_backend_linear_cuda.cpp
  MatView to_bf16(const MatView& v, int64_t stride, int64_t batch, Tensor& keep);
  void copy_batched(const MatView& src, int64_t src_stride, const MatView& dst, int64_t dst_stride,
                    int64_t batch);

  static constexpr size_t kCublasWorkspaceBytes = size_t(32) << 20;

  int64_t gemv_max_rows_ = 8;  // KernelOptions::gemv_max_rows
  bool gemv_k_tail_ = false;   // KernelOptions::gemv_k_tail: K % 8 != 0 on the GEMV
  bool latent_uk_t_ = false;   // KernelOptions::latent_uk_t
  std::shared_ptr<StreamState> state_;
  cublasHandle_t cublas_ = nullptr;
  void* cublas_workspace_ = nullptr;
  void* staging_ = nullptr;  // pinned host memory for upload_async
  size_t staging_bytes_ = 0, staging_used_ = 0;
  bool op_timing_ = false;
  int64_t cublas_calls_ = 0;  // since the last take_op_times (OpTimes::cublas_calls)
  std::vector<std::tuple<double OpTimes::*, cudaEvent_t, cudaEvent_t>> timed_;
  std::vector<cudaEvent_t> spare_events_;
  cudaEvent_t staging_done_ = nullptr;  // recorded after the latest staged copy
  cuda::CudaPagedAttention attention_;
  std::unique_ptr<cuda::MlpBlockKernel> mlp_block_;    // KernelOptions::mlp_block == 1
  std::unique_ptr<cuda::AttnBlockKernel> attn_block_;  // KernelOptions::attn_block == 1
  std::string name_;
};

}  // namespace mlra::cuda_backend_detail
