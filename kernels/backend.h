// The ops a transformer forward needs, behind one interface with a CPU reference implementation
// (fp32, OpenBLAS) and a CUDA one (bf16 weights and activations, fp32 residual, cuBLAS + our
// kernels). Models are written once against this interface.
// Conventions: matrices are row-major MatViews; weights follow nn.Linear ([out, in]); every op
// is enqueued in order on the backend's stream (the CPU backend runs it immediately).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kernels/kernel_options.h"
#include "kernels/paged_attention.h"
#include "kernels/tensor.h"

namespace mlra {

// A recorded sequence of ops (a CUDA graph) that replays on the backend's stream with the same
// device pointers it was recorded with; inputs change by rewriting those buffers before replay.
class CapturedOps {
 public:
  virtual ~CapturedOps() = default;
  virtual void replay() = 0;
};

struct DeviceMemory {
  int64_t free_bytes = 0;
  int64_t total_bytes = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual DeviceKind kind() const = 0;
  virtual std::string name() const = 0;
  virtual DType weight_dtype() const = 0;  // dtype weights are stored in
  virtual DType act_dtype() const = 0;     // dtype of matmul inputs/outputs (residual is f32)
  virtual DType cache_dtype() const = 0;   // dtype of the paged cache

  virtual Tensor alloc(const std::vector<int64_t>& shape, DType dtype) = 0;
  // Host float32 -> tensor of any float dtype (converted); n == dst.numel().
  virtual void upload_f32(Tensor& dst, const float* src) = 0;
  // Raw host -> device copy (same dtype); bytes <= dst.bytes().
  virtual void upload(Tensor& dst, const void* src, size_t bytes) = 0;
  // Like upload, but returns at once: src is staged (copied) before return, so the caller may reuse
  // it; the device copy is ordered before every later op on the stream.
  virtual void upload_async(Tensor& dst, const void* src, size_t bytes) { upload(dst, src, bytes); }
  // Device -> host copy of a float tensor region, converted to f32.
  virtual void download_f32(const MatView& src, float* dst) = 0;
  virtual void synchronize() = 0;

  // y = alpha * x . w^T + beta * y.  x [M, K], w [N, K], y [M, N].
  virtual void linear(const MatView& x, const MatView& w, const MatView& y, float alpha,
                      float beta) = 0;
  // For b < batch: y_b = alpha * x_b . op(w_b) + beta * y_b, each operand offset by b * stride
  // elements. op(w) = w^T when w_out_by_in (w_b is [N, K]) and w otherwise (w_b is [K, N]).
  virtual void linear_batched(const MatView& x, int64_t x_stride, const MatView& w,
                              int64_t w_stride, bool w_out_by_in, const MatView& y,
                              int64_t y_stride, int64_t batch, float alpha, float beta) = 0;
  // out[i] = table[tokens[i]]; tokens on the backend's device.
  virtual void embed(const int32_t* tokens, int64_t n, const MatView& table,
                     const MatView& out) = 0;
  // out = w * (x / rms(x)) * scale, rowwise over x.cols; w has x.cols entries (weight dtype).
  // x.cols = groups * g: each group of g columns normed alone with w[group * g, + g) (the
  // latents of one token in one launch). Default: one rms_norm per group.
  virtual void rms_norm_groups(const MatView& x, const Tensor& w, int64_t groups, float eps,
                               float scale, const MatView& out);
  // acc += delta (acc is the f32 residual), then out = RMSNorm(acc) * w. Default: add, rms_norm.
  virtual void add_rms_norm(const MatView& delta, const MatView& acc, const Tensor& w, float eps,
                            const MatView& out);
  virtual void rms_norm(const MatView& x, const Tensor& w, float eps, float scale,
                        const MatView& out) = 0;
  // In place half-split RoPE on n_heads sub-vectors per row: head h covers
  // cols [h * head_stride + rot_offset, + rot_dim). positions on device, one per row.
  virtual void rope(const MatView& x, int64_t n_heads, int64_t head_stride, int64_t rot_offset,
                    int64_t rot_dim, const int32_t* positions, float base) = 0;
  // out = silu(a) * b
  virtual void silu_mul(const MatView& a, const MatView& b, const MatView& out) = 0;
  // out = silu(x . w1^T) * (x . w2^T): w12 = [w1; w2] ([2F, K], halves back to back), x [M, K],
  // out [M, F]. Default: linear into an act_dtype() [M, 2F] temporary, then silu_mul.
  virtual void linear_swiglu(const MatView& x, const MatView& w12, const MatView& out);
  // The MLP half of a layer up to its all-reduce (decode: one launch on the GPU where the kernel
  // option mlp_block is on): acc += delta; h = RMSNorm(acc) * ln2; a = silu(h . W1^T) *
  // (h . W2^T) with w12 = [W1; W2] ([2F, d]); y = a . proj^T (proj [d, F], any ld). Shapes:
  // delta, h, y [M, d]; acc [M, d] f32; a [M, F]. h and a are written as the composition writes
  // them; y may alias delta. Default: add_rms_norm, linear_swiglu, linear.
  struct MlpBlockArgs {
    MatView delta, acc;
    Tensor ln2;
    float eps = 0.0f;
    MatView w12, proj, h, a, y;
  };
  virtual void mlp_block(const MlpBlockArgs& m);
  // For i < batch: dst_i <- src_i, where X_i is the [rows, cols] view X offset by i * X_stride
  // elements (src and dst of one dtype and shape, not overlapping). Returns false where the
  // backend has no such copy (the default); the caller then computes the values again.
  virtual bool copy_rows_batched(const MatView& /*src*/, int64_t /*src_stride*/,
                                 const MatView& /*dst*/, int64_t /*dst_stride*/,
                                 int64_t /*batch*/) {
    return false;
  }
  // x *= sigmoid(gate)
  virtual void sigmoid_mul(const MatView& gate, const MatView& x) = 0;
  // acc += x (acc may be a wider dtype than x)
  virtual void add(const MatView& x, const MatView& acc) = 0;
  // y = alpha * y
  virtual void scale(const MatView& y, float alpha) = 0;
  // cache row slots[i] (= page * page_size + offset) cols [col_offset, + src.cols) <- src row i.
  // An FP8 cache (CacheEncoding::kFp8E4M3) quantizes: the columns must cover whole groups.
  virtual void cache_write(const MatView& src, const int32_t* slots, const PagedCacheView& cache,
                           int32_t col_offset) = 0;
  // out row i <- cache row slots[i] cols [col_offset, + out.cols), converted (dequantized) to
  // out's dtype; slots on the backend's device. Default: a row gather (embed) of a plain cache.
  virtual void cache_gather(const PagedCacheView& cache, const int32_t* slots, int64_t n,
                            int32_t col_offset, const MatView& out);
  // Whether caches of this encoding can be written, gathered and attended by this backend.
  virtual bool supports_cache_encoding(CacheEncoding e) const { return e == CacheEncoding::kPlain; }
  virtual void paged_attention(const PagedAttentionArgs& args) = 0;
  // A latent cache entry per token: row [T, groups * g + rot_dim] = [latents | k_pe]. Each of the
  // `groups` latent groups of g columns is RMS-normed in place (w [groups * g], eps, scale; none
  // when groups == 0), k_pe (the last rot_dim columns) roped in place at positions[t], then row t
  // written to cache slot slots[t]. Default: rms_norm_groups, rope, cache_write.
  virtual void latent_cache_write(const MatView& row, const Tensor& w, int64_t groups, float eps,
                                  float scale, int64_t rot_dim, const int32_t* positions,
                                  float rope_base, const int32_t* slots,
                                  const PagedCacheView& cache);
  // Absorbed latent attention's per-head projections over its units (unit: heads [head0, head0 +
  // n_heads) of q_nope / o, virtual heads [v0, v0 + n_heads), W_UK and W_UV [n_heads, dn, width]).
  // latent_queries: qv[t, v] = [W_UK[v]^T q_nope[t, h(v)] | RoPE(W_rope[h(v)] cq[t])], rows of
  // qv (width + dr) per virtual head; rope_w is [heads * dr, cq.cols]. latent_up_project:
  // o[t, h] = alpha * sum over h's units of W_UV[v] z[t, v] (heads no unit covers: untouched).
  // Defaults compose linear_batched + rope (the reference; units over the same heads share one
  // q_pe product, copied by copy_rows_batched where the backend has it); the GPU fuses each into
  // one launch for one-token steps and composes the rest (kernels/README.md, fused ops). W_UK comes
  // in the copies latent_uk_layouts asks for: w_uk (in_by_out, [n_heads, dn, width]) and w_uk_t
  // (out_by_in, [n_heads, width, dn]: W_UK^T per head); an absent one has no data. The composition
  // multiplies by w_uk_t where the view has it, else by w_uk.
  struct LatentUnitView {
    Tensor w_uk, w_uv;
    int64_t head0 = 0, n_heads = 0, v0 = 0;
    Tensor w_uk_t;
  };
  struct LatentUkLayouts {
    bool in_by_out = true;   // w_uk
    bool out_by_in = false;  // w_uk_t
  };
  // The W_UK copies this backend reads for a call over n_units units of this width (at least
  // one). Default: w_uk only, so the reference composition's numerics are the layout's own.
  virtual LatentUkLayouts latent_uk_layouts(int64_t /*n_units*/, int64_t /*width*/) const {
    return {};
  }
  virtual void latent_queries(const MatView& q_nope, const MatView& cq, const MatView& rope_w,
                              const std::vector<LatentUnitView>& units, int64_t dn, int64_t dr,
                              int64_t width, const int32_t* positions, float rope_base,
                              const MatView& qv);
  virtual void latent_up_project(const MatView& z, const std::vector<LatentUnitView>& units,
                                 int64_t dn, int64_t width, float alpha, const MatView& o);
  // The front of absorbed latent attention (not TPLA) up to the attention kernel; decode: one
  // launch on the GPU where the kernel option attn_block is on (kernels/attn_block.h).
  //   xp = x . x_proj^T: [T, r_q + groups * g + dr] = [W_qa x | raw latents | k_pe];
  //   cq = RMSNorm(xp[:, :r_q]) * q_norm * q_scale; q_nope = cq . q_b_nope^T;
  //   qv = latent_queries(q_nope, cq, rope_w, units, ...);
  //   xp[:, r_q:] = its cache entry (latent_cache_write: groups latents normed with
  //   latent_norms * kv_scale, k_pe roped), written to cache slots[t].
  // xp, cq, q_nope are written as the composition writes them (the caller reads xp's entry).
  // Default: linear, rms_norm, linear, latent_queries, latent_cache_write.
  struct AttnBlockArgs {
    MatView x, x_proj, xp;
    Tensor q_norm;
    float q_scale = 1.0f;
    MatView cq, q_b_nope, q_nope, rope_w;
    std::vector<LatentUnitView> units;
    int64_t dn = 0, dr = 0, width = 0;
    Tensor latent_norms;
    int64_t groups = 0;
    float kv_scale = 1.0f, eps = 0.0f;
    const int32_t* positions = nullptr;
    float rope_base = 10000.0f;
    const int32_t* slots = nullptr;
    PagedCacheView cache;
    MatView qv;
  };
  virtual void attn_block(const AttnBlockArgs& a);
  // Brackets one forward step: between them, paged_attention calls with the same step metadata
  // (positions buffer, token count, head tiling) share one split-KV plan, computed by the first
  // (FlashInfer-style plan once per step, run per layer). Outside a step every call plans.
  virtual void begin_step() {}
  virtual void end_step() {}

  // Recording: ops enqueued between begin_capture and end_capture are recorded, not run. Memory
  // allocated and freed inside the window belongs to the recording. Only where supported.
  virtual bool supports_capture() const { return false; }
  virtual void begin_capture();
  virtual std::unique_ptr<CapturedOps> end_capture();
  // Device time per op family, for benchmarks (a breakdown of a prefill step, say): while
  // enabled, eager matrix products and attention calls are bracketed by device events. Not for
  // recorded steps. take_op_times() waits for the device and returns the sums since the last call.
  // cublas_calls counts every cuBLAS GEMM enqueued since the last take_op_times() (or
  // set_op_timing), timed or not, recorded ones included: decode-sized steps should have none.
  struct OpTimes {
    double matmul_ms = 0.0;     // linear / linear_batched (cuBLAS or our GEMV)
    double attention_ms = 0.0;  // paged_attention (plan + kernels + merge)
    int64_t cublas_calls = 0;
  };
  virtual void set_op_timing(bool) {}
  virtual OpTimes take_op_times() { return {}; }
  // Device memory as the driver reports it; {0, 0} on the CPU backend (no fixed device budget).
  virtual DeviceMemory memory() const { return {}; }
};

std::unique_ptr<Backend> make_cpu_backend();
#ifdef MLRA_HAVE_CUDA
// The options choose among the CUDA kernels (kernels/kernel_options.h); out-of-range options
// throw std::invalid_argument naming the field.
std::unique_ptr<Backend> make_cuda_backend(int device, const KernelOptions& options = {});
#endif

}  // namespace mlra
