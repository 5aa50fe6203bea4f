// CUDA backend: bf16 weights, activations and cache, f32 residual and norm math; cuBLAS for the
// matrix products (row-major views mapped onto column-major GEMMs), our kernels for the rest.
// Every op is enqueued on one stream per backend; device memory comes from the stream-ordered
// pool (cudaMallocAsync), so the many small per-layer temporaries cost no device synchronization.
// Invariant: every op first makes this backend's device current (ranks run on separate threads).
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <tuple>
#include <vector>

#include "kernels/attn_block.h"
#include "kernels/backend.h"
#include "kernels/cuda_backend.h"
#include "kernels/cuda_check.h"
#include "kernels/cuda_ops.h"
#include "kernels/gemv.h"
#include "kernels/latent_projections.h"
#include "kernels/mlp_block.h"
#include "kernels/paged_attention_cuda.h"

namespace mlra {
namespace {

using cuda::CudaPagedAttention;

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

cudaDataType_t cuda_type(DType t) {
  switch (t) {
    case DType::kBF16:
      return CUDA_R_16BF;
    case DType::kF16:
      return CUDA_R_16F;
    case DType::kF32:
      return CUDA_R_32F;
    default:
      throw std::invalid_argument(std::string("cuda backend: no GEMM type for ") + dtype_name(t));
  }
}

bool aligned16(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0;
}
bool all_bf16(std::initializer_list<MatView> views) {
  for (const MatView& v : views)
    if (v.dtype != DType::kBF16) return false;
  return true;
}
const __nv_bfloat16* bf16_ptr(const MatView& v) {
  return static_cast<const __nv_bfloat16*>(v.data);
}

// Unit counts and widths the fused latent kernels may take (the kernels check the rest).
bool fused_latent_shape(int64_t n_units, int64_t width) {
  return n_units >= cuda::kMinFusedLatentUnits && n_units <= cuda::kMaxLatentUnits &&
         width % 8 == 0;
}

// Units the fused latent kernels take: fused_latent_shape, bf16 weights, and for the queries
// kernel (need_uk) W_UK as w_uk ([n_heads, dn, width], the layout it reads).
bool fused_latent_units(const std::vector<Backend::LatentUnitView>& units, int64_t dn,
                        int64_t width, bool need_uk, cuda::LatentProjParams& p) {
  if (!fused_latent_shape(int64_t(units.size()), width)) return false;
  for (size_t i = 0; i < units.size(); ++i) {
    const auto& u = units[i];
    if ((need_uk && (u.w_uk.data == nullptr || u.w_uk.dtype != DType::kBF16)) ||
        u.w_uv.dtype != DType::kBF16 || u.n_heads <= 0)
      return false;
    p.unit[i] = {static_cast<const __nv_bfloat16*>(u.w_uk.data),
                 static_cast<const __nv_bfloat16*>(u.w_uv.data), int32_t(u.head0),
                 int32_t(u.n_heads), int32_t(u.v0)};
    p.n_virt = std::max<int32_t>(p.n_virt, int32_t(u.v0 + u.n_heads));
  }
  p.n_units = int32_t(units.size());
  p.dn = int32_t(dn);
  p.width = int32_t(width);
  return true;
}

// The kernel's view of Backend::attn_block's arguments; false where it cannot take them (a unit
// without w_uk, more units than the kernel holds, weights not bf16, norms of the wrong size).
bool attn_block_operands(const Backend::AttnBlockArgs& a, cuda::AttnBlockOperands& o) {
  if (a.units.empty() || a.units.size() > size_t(cuda::kMaxLatentUnits)) return false;
  if (a.q_norm.numel() != a.cq.cols || a.latent_norms.numel() != a.groups * a.width ||
      a.latent_norms.dtype != DType::kBF16)
    return false;
  for (size_t i = 0; i < a.units.size(); ++i) {
    const auto& u = a.units[i];
    if (u.w_uk.data == nullptr || u.w_uk.dtype != DType::kBF16 ||
        u.w_uk.numel() != u.n_heads * a.dn * a.width)
      return false;
    o.unit[i] = {static_cast<const __nv_bfloat16*>(u.w_uk.data),
                 static_cast<const __nv_bfloat16*>(u.w_uv.data), int32_t(u.head0),
                 int32_t(u.n_heads), int32_t(u.v0)};
  }
  o.x = a.x;
  o.x_proj = a.x_proj;
  o.xp = a.xp;
  o.q_norm = a.q_norm.data;
  o.q_norm_dtype = a.q_norm.dtype;
  o.q_scale = a.q_scale;
  o.cq = a.cq;
  o.q_b_nope = a.q_b_nope;
  o.q_nope = a.q_nope;
  o.rope_w = a.rope_w;
  o.n_units = int(a.units.size());
  o.dn = int(a.dn);
  o.dr = int(a.dr);
  o.width = int(a.width);
  o.latent_norms = a.latent_norms.data;
  o.latent_norms_dtype = a.latent_norms.dtype;
  o.groups = int(a.groups);
  o.kv_scale = a.kv_scale;
  o.eps = a.eps;
  o.positions = a.positions;
  o.rope_base = a.rope_base;
  o.slots = a.slots;
  o.cache = a.cache;
  o.qv = a.qv;
  return true;
}

uint16_t f32_to_bf16_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);                                         // round to nearest even
  return uint16_t(u >> 16);
}

class CudaBackend final : public Backend {
 public:
  CudaBackend(int device, const KernelOptions& options)
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
  ~CudaBackend() override {
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

  cudaStream_t stream() const { return state_->stream; }

  DeviceKind kind() const override { return DeviceKind::kCuda; }
  std::string name() const override { return name_; }
  DType weight_dtype() const override { return DType::kBF16; }
  DType act_dtype() const override { return DType::kBF16; }
  DType cache_dtype() const override { return DType::kBF16; }

  Tensor alloc(const std::vector<int64_t>& shape, DType dtype) override {
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

  void upload_f32(Tensor& dst, const float* src) override {
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
  void upload(Tensor& dst, const void* src, size_t bytes) override {
    activate();
    MLRA_REQUIRE(bytes <= dst.bytes(), "upload overflows tensor");
    MLRA_CUDA_CHECK(cudaMemcpyAsync(dst.data, src, bytes, cudaMemcpyHostToDevice, stream()));
    MLRA_CUDA_CHECK(cudaStreamSynchronize(stream()));  // src may be freed once we return
  }
  // Copies src into pinned staging memory and enqueues the device copy from there. The staging
  // area is a bump allocator that restarts once the stream has consumed it.
  void upload_async(Tensor& dst, const void* src, size_t bytes) override {
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
  void download_f32(const MatView& src, float* dst) override {
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
  void synchronize() override {
    activate();
    MLRA_CUDA_CHECK(cudaStreamSynchronize(stream()));
  }

  void linear(const MatView& x, const MatView& w, const MatView& y, float alpha,
              float beta) override {
    MLRA_REQUIRE(x.cols == w.cols && y.rows == x.rows && y.cols == w.rows,
                 "linear: shape mismatch");
    linear_batched(x, 0, w, 0, true, y, 0, 1, alpha, beta);
  }

  // Row-major y [M, N] = x [M, K] . op(w) is column-major y^T [N, M] = op(w)^T [N, K] . x^T [K, M].
  void linear_batched(const MatView& x, int64_t x_stride, const MatView& w, int64_t w_stride,
                      bool w_out_by_in, const MatView& y, int64_t y_stride, int64_t batch,
                      float alpha, float beta) override {
    activate();
    const TimedOp timed(this, &OpTimes::matmul_ms);
    const int64_t n = w_out_by_in ? w.rows : w.cols;
    const int64_t k = w_out_by_in ? w.cols : w.rows;
    MLRA_REQUIRE(x.cols == k && y.rows == x.rows && y.cols == n, "linear_batched: shape mismatch");
    if (x.rows == 0 || n == 0 || batch == 0) return;
    // Few rows over bf16 weights (decode): our GEMV reads each weight byte once, where cuBLAS
    // picks split-K kernels plus a reduction launch. One row: the FMA kernel (either layout, an
    // f32 x read as is, not rounded to bf16 as below); 2..8 rows: the tensor-core kernel where it
    // applies (bf16 x, w [N, K]), cuBLAS otherwise (the FMA kernel's cost grows with the rows).
    // K % 8 != 0 takes the GEMV only under the kernel option gemv_k_tail.
    if (x.rows <= gemv_max_rows_ && (gemv_k_tail_ || k % 8 == 0) &&
        (x.rows == 1
             ? cuda::gemv_supports(x, x_stride, w, w_stride, w_out_by_in, y, y_stride, batch)
             : cuda::gemv_mma_supports(x, x_stride, w, w_stride, w_out_by_in, y, y_stride,
                                       batch))) {
      cuda::launch_gemv(x, x_stride, w, w_stride, w_out_by_in, y, y_stride, batch, alpha, beta,
                        stream());
      return;
    }
    // Mixed operands: bring an f32 operand to bf16 (the other is bf16) so cuBLAS sees one type.
    Tensor xt, wt, yt;
    MatView xv = x, wv = w, yv = y;
    const bool all_f32 = x.dtype == DType::kF32 && w.dtype == DType::kF32;
    if (!all_f32) {
      xv = to_bf16(x, x_stride, batch, xt);
      wv = to_bf16(w, w_stride, batch, wt);
    }
    const bool y_direct =
        all_f32 ? y.dtype == DType::kF32 : (y.dtype == DType::kF32 || y.dtype == DType::kBF16);
    int64_t ys = y_stride;
    if (!y_direct) {
      // f16 output (or bf16 output of f32 operands): compute in f32 and convert.
      ys = y_stride ? y.rows * y.cols : 0;
      yt = alloc({batch * y.rows, y.cols}, DType::kF32);
      yv = as_mat(yt, y.cols);
      yv.rows = y.rows;  // one operand, like y
      if (beta != 0.0f) copy_batched(y, y_stride, yv, ys, batch);
    }
    const int64_t xs = xv.data == x.data ? x_stride : (x_stride ? x.rows * x.cols : 0);
    const int64_t wsd = wv.data == w.data ? w_stride : (w_stride ? w.rows * w.cols : 0);
    MLRA_CUDA_CHECK(cublasGemmStridedBatchedEx(
        cublas_, w_out_by_in ? CUBLAS_OP_T : CUBLAS_OP_N, CUBLAS_OP_N, int(n), int(x.rows), int(k),
        &alpha, wv.data, cuda_type(wv.dtype), int(wv.ld), wsd, xv.data, cuda_type(xv.dtype),
        int(xv.ld), xs, &beta, yv.data, cuda_type(yv.dtype), int(yv.ld), ys, int(batch),
        CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    ++cublas_calls_;
    if (!y_direct) copy_batched(yv, ys, y, y_stride, batch);
  }

  void embed(const int32_t* tokens, int64_t n, const MatView& table, const MatView& out) override {
    activate();
    cuda::launch_embed(tokens, n, table, out, stream());
  }
  void rms_norm(const MatView& x, const Tensor& w, float eps, float scale,
                const MatView& out) override {
    activate();
    MLRA_REQUIRE(w.numel() == x.cols, "rms_norm weight size");
    cuda::launch_rms_norm(x, w.data, w.dtype, eps, scale, out, stream());
  }
  void rms_norm_groups(const MatView& x, const Tensor& w, int64_t groups, float eps, float scale,
                       const MatView& out) override {
    activate();
    MLRA_REQUIRE(w.numel() == x.cols, "rms_norm_groups weight size");
    cuda::launch_rms_norm_groups(x, w.data, w.dtype, groups, eps, scale, out, stream());
  }
  void add_rms_norm(const MatView& delta, const MatView& acc, const Tensor& w, float eps,
                    const MatView& out) override {
    activate();
    MLRA_REQUIRE(w.numel() == acc.cols, "add_rms_norm weight size");
    cuda::launch_add_rms_norm(delta, acc, w.data, w.dtype, eps, out, stream());
  }
  void rope(const MatView& x, int64_t n_heads, int64_t head_stride, int64_t rot_offset,
            int64_t rot_dim, const int32_t* positions, float base) override {
    activate();
    cuda::launch_rope(x, n_heads, head_stride, rot_offset, rot_dim, positions, base, stream());
  }
  void silu_mul(const MatView& a, const MatView& b, const MatView& out) override {
    activate();
    cuda::launch_silu_mul(a, b, out, stream());
  }
  // The GEMV's SwiGLU form where the product would take the GEMV anyway (decode-sized steps).
  void linear_swiglu(const MatView& x, const MatView& w12, const MatView& out) override {
    activate();
    if (x.rows >= 1 && x.rows <= gemv_max_rows_ && (gemv_k_tail_ || x.cols % 8 == 0) &&
        cuda::gemv_swiglu_supports(x, w12, out)) {
      const TimedOp timed(this, &OpTimes::matmul_ms);
      return cuda::launch_gemv_swiglu(x, w12, out, stream());
    }
    Backend::linear_swiglu(x, w12, out);
  }
  // One-token steps under the mlp_block option: one persistent launch (kernels/mlp_block.h).
  void mlp_block(const MlpBlockArgs& m) override {
    activate();
    if (mlp_block_ && m.delta.rows == 1) {
      const cuda::MlpBlockOperands o{m.delta, m.acc,  m.ln2.data, m.ln2.dtype, m.eps,
                                     m.w12,   m.proj, m.h,        m.a,         m.y};
      if (m.ln2.numel() == m.acc.cols && mlp_block_->supports(o) && mlp_block_->runs_on(stream())) {
        const TimedOp timed(this, &OpTimes::matmul_ms);
        return mlp_block_->launch(o, stream());
      }
    }
    Backend::mlp_block(m);
  }
  // One 3D copy where a view's rows lie a whole number of strides apart (the heads of a token row,
  // rows = tokens), else one 2D copy per batch item. Graph capturable. Under latent_uk_t 0 it
  // declines, so the composed latent query path issues the launches measured on a GPU (each unit
  // recomputes its q_pe); the copy belongs to that option's rework of the 2..8-token path.
  bool copy_rows_batched(const MatView& src, int64_t src_stride, const MatView& dst,
                         int64_t dst_stride, int64_t batch) override {
    if (!latent_uk_t_) return false;
    activate();
    MLRA_REQUIRE(src.dtype == dst.dtype && src.rows == dst.rows && src.cols == dst.cols,
                 "copy_rows_batched: src and dst must have one dtype and shape");
    if (batch <= 0 || src.rows == 0 || src.cols == 0) return true;
    const size_t es = dtype_size(src.dtype), w = size_t(src.cols) * es;
    const auto whole = [&](const MatView& v, int64_t stride) {
      return stride >= v.cols && v.ld % stride == 0 && v.ld / stride >= batch;
    };
    if (whole(src, src_stride) && whole(dst, dst_stride)) {
      cudaMemcpy3DParms p{};
      p.srcPtr =
          make_cudaPitchedPtr(src.data, size_t(src_stride) * es, w, size_t(src.ld / src_stride));
      p.dstPtr =
          make_cudaPitchedPtr(dst.data, size_t(dst_stride) * es, w, size_t(dst.ld / dst_stride));
      p.extent = make_cudaExtent(w, size_t(batch), size_t(src.rows));
      p.kind = cudaMemcpyDeviceToDevice;
      MLRA_CUDA_CHECK(cudaMemcpy3DAsync(&p, stream()));
      return true;
    }
    for (int64_t i = 0; i < batch; ++i)
      MLRA_CUDA_CHECK(cudaMemcpy2DAsync(
          static_cast<char*>(dst.data) + i * dst_stride * int64_t(es), size_t(dst.ld) * es,
          static_cast<const char*>(src.data) + i * src_stride * int64_t(es), size_t(src.ld) * es, w,
          size_t(src.rows), cudaMemcpyDeviceToDevice, stream()));
    return true;
  }
  // One-token steps under the attn_block option: one persistent launch (kernels/attn_block.h).
  void attn_block(const AttnBlockArgs& a) override {
    activate();
    cuda::AttnBlockOperands o;
    if (attn_block_ && a.x.rows == 1 && attn_block_operands(a, o) && attn_block_->supports(o) &&
        attn_block_->runs_on(stream())) {
      const TimedOp timed(this, &OpTimes::matmul_ms);
      return attn_block_->launch(o, stream());
    }
    Backend::attn_block(a);
  }
  void sigmoid_mul(const MatView& gate, const MatView& x) override {
    activate();
    cuda::launch_sigmoid_mul(gate, x, stream());
  }
  void add(const MatView& x, const MatView& acc) override {
    activate();
    cuda::launch_add(x, acc, stream());
  }
  void scale(const MatView& y, float alpha) override {
    activate();
    cuda::launch_scale(y, alpha, stream());
  }
  void cache_write(const MatView& src, const int32_t* slots, const PagedCacheView& cache,
                   int32_t col_offset) override {
    activate();
    cuda::launch_cache_write(src, slots, cache, col_offset, stream());
  }
  void cache_gather(const PagedCacheView& cache, const int32_t* slots, int64_t n,
                    int32_t col_offset, const MatView& out) override {
    if (cache.encoding == CacheEncoding::kPlain)
      return Backend::cache_gather(cache, slots, n, col_offset, out);
    activate();
    cuda::launch_fp8_cache_gather(cache, slots, n, col_offset, out, stream());
  }
  // FP8 caches: written by the quantizing write, read by the generic attention kernel.
  bool supports_cache_encoding(CacheEncoding) const override { return true; }
  void latent_cache_write(const MatView& row, const Tensor& w, int64_t groups, float eps,
                          float scale, int64_t rot_dim, const int32_t* positions, float rope_base,
                          const int32_t* slots, const PagedCacheView& cache) override {
    activate();
    MLRA_REQUIRE(groups == 0 || w.numel() == row.cols - rot_dim, "latent_cache_write weight size");
    cuda::launch_latent_cache_write(row, w.data, w.dtype, groups, eps, scale, rot_dim, positions,
                                    rope_base, slots, cache, stream());
  }
  void latent_queries(const MatView& q_nope, const MatView& cq, const MatView& rope_w,
                      const std::vector<LatentUnitView>& units, int64_t dn, int64_t dr,
                      int64_t width, const int32_t* positions, float rope_base,
                      const MatView& qv) override {
    activate();
    // One-token steps only: at 2..8 tokens the composition measured faster than fusing.
    cuda::LatentProjParams p;
    const bool ok = q_nope.rows == 1 && fused_latent_units(units, dn, width, true, p) &&
                    all_bf16({q_nope, cq, rope_w, qv}) && cq.cols % 8 == 0 && aligned16(cq.data) &&
                    rope_w.ld % 8 == 0 && aligned16(rope_w.data) && rope_w.rows % dr == 0 &&
                    dr % 2 == 0;
    if (ok) {
      p.heads = int32_t(rope_w.rows / dr);
      p.dr = int32_t(dr);
      p.r_q = int32_t(cq.cols);
      p.q_nope = bf16_ptr(q_nope);
      p.cq = bf16_ptr(cq);
      p.rope_w = bf16_ptr(rope_w);
      p.rope_ld = rope_w.ld;
      p.positions = positions;
      p.rope_base = double(rope_base);
      p.qv = static_cast<__nv_bfloat16*>(qv.data);
    }
    if (ok && cuda::latent_projections_support(p)) return cuda::launch_latent_queries(p, stream());
    if (!latent_uk_t_)  // units hold w_uk only: at 2..8 rows its product goes to cuBLAS
      return Backend::latent_queries(q_nope, cq, rope_w, units, dn, dr, width, positions, rope_base,
                                     qv);
    // Composed: the tensor-core GEMV takes W_UK only as w_uk_t, so 2..gemv_max_rows rows use that
    // copy where the unit has it. Other row counts (the FMA GEMV at one row, cuBLAS past the
    // GEMV's rows) take either layout and keep w_uk where the unit has both.
    std::vector<LatentUnitView> picked = units;
    const bool mma_rows = q_nope.rows >= 2 && q_nope.rows <= gemv_max_rows_;
    for (auto& u : picked)
      if (!mma_rows && u.w_uk.data != nullptr) u.w_uk_t = Tensor{};
    Backend::latent_queries(q_nope, cq, rope_w, picked, dn, dr, width, positions, rope_base, qv);
  }
  // Kernel option latent_uk_t 0: w_uk only (the base class's answer). 1: w_uk_t always (the
  // composition's 2..8-row products run on the tensor-core GEMV), w_uk as well where the one-token
  // fused kernel may run (its layout). The memory the copy costs per layer is listed at
  // LatentAttention::Unit (models/latent_attention.h).
  LatentUkLayouts latent_uk_layouts(int64_t n_units, int64_t width) const override {
    if (!latent_uk_t_) return Backend::latent_uk_layouts(n_units, width);
    return {fused_latent_shape(n_units, width), true};
  }
  void latent_up_project(const MatView& z, const std::vector<LatentUnitView>& units, int64_t dn,
                         int64_t width, float alpha, const MatView& o) override {
    activate();
    cuda::LatentProjParams p;  // one-token steps only, as latent_queries
    const bool ok = z.rows == 1 && fused_latent_units(units, dn, width, false, p) &&
                    all_bf16({z, o}) && aligned16(z.data) && o.cols % dn == 0;
    if (!ok) return Backend::latent_up_project(z, units, dn, width, alpha, o);
    p.heads = int32_t(o.cols / dn);
    p.z = bf16_ptr(z);
    p.o = static_cast<__nv_bfloat16*>(o.data);
    p.alpha = alpha;
    cuda::launch_latent_up(p, stream());
  }
  void begin_step() override { attention_.begin_step(); }
  void end_step() override { attention_.end_step(); }
  void paged_attention(const PagedAttentionArgs& args) override {
    activate();
    const TimedOp timed(this, &OpTimes::attention_ms);
    attention_.plan(args, stream());
    attention_.run(args, stream());
  }

  bool supports_capture() const override { return true; }
  // Thread-local mode: other ranks' threads may allocate or synchronize while this one records.
  void begin_capture() override {
    activate();
    MLRA_CUDA_CHECK(cudaStreamBeginCapture(stream(), cudaStreamCaptureModeThreadLocal));
  }
  std::unique_ptr<CapturedOps> end_capture() override {
    activate();
    cudaGraph_t graph = nullptr;
    MLRA_CUDA_CHECK(cudaStreamEndCapture(stream(), &graph));
    return std::make_unique<CudaGraph>(state_->device, stream(), graph);
  }
  void set_op_timing(bool on) override {
    take_op_times();
    op_timing_ = on;
  }
  OpTimes take_op_times() override {
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
  DeviceMemory memory() const override {
    activate();
    size_t free_b = 0, total_b = 0;
    MLRA_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    return {int64_t(free_b), int64_t(total_b)};
  }

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

  // bf16 copy of `batch` operands (stride apart) packed densely; the view itself when bf16.
  MatView to_bf16(const MatView& v, int64_t stride, int64_t batch, Tensor& keep) {
    if (v.dtype == DType::kBF16) return v;
    const int64_t copies = stride ? batch : 1;
    keep = alloc({copies * v.rows, v.cols}, DType::kBF16);
    MatView dense = as_mat(keep, v.cols);
    dense.rows = v.rows;  // one operand; copy_batched converts same-shaped views
    copy_batched(v, stride, dense, v.rows * v.cols, copies);
    return dense;
  }
  // dst_b = src_b for b < batch (converting dtypes); a zero stride means one shared operand.
  void copy_batched(const MatView& src, int64_t src_stride, const MatView& dst, int64_t dst_stride,
                    int64_t batch) {
    const int64_t copies = src_stride || dst_stride ? batch : 1;
    for (int64_t b = 0; b < copies; ++b) {
      MatView s = src, d = dst;
      s.data = static_cast<char*>(src.data) + b * src_stride * dtype_size(src.dtype);
      d.data = static_cast<char*>(dst.data) + b * dst_stride * dtype_size(dst.dtype);
      cuda::launch_convert(s, d, stream());
    }
  }

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
  CudaPagedAttention attention_;
  std::unique_ptr<cuda::MlpBlockKernel> mlp_block_;    // KernelOptions::mlp_block == 1
  std::unique_ptr<cuda::AttnBlockKernel> attn_block_;  // KernelOptions::attn_block == 1
  std::string name_;
};

}  // namespace

std::unique_ptr<Backend> make_cuda_backend(int device, const KernelOptions& options) {
  if (const std::string why = kernel_options_error(options); !why.empty())
    throw std::invalid_argument("cuda backend: kernel options: " + why);
  return std::make_unique<CudaBackend>(device, options);
}

cudaStream_t cuda_stream_of(Backend& b) {
  auto* c = dynamic_cast<CudaBackend*>(&b);
  if (!c) throw std::invalid_argument("cuda_stream_of: not a CUDA backend");
  return c->stream();
}

}  // namespace mlra
