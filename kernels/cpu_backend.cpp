// CPU reference backend: fp32 everywhere, OpenBLAS for the matrix products, our own loops for
// the rest. It is the numerics oracle the CUDA kernels are tested against, the CPU serving
// backend and what CI runs on. Every op runs synchronously on the calling thread.
#include <cblas.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#include "kernels/backend.h"
#include "kernels/paged_attention_cpu.h"
#include "kernels/paged_cache_cpu.h"

namespace mlra {
namespace {

constexpr int64_t kGemvMaxRows = 4;  // linear_batched: rows that go through cblas_sgemv

void require_f32(const MatView& v, const char* op) {
  if (v.dtype != DType::kF32)
    throw std::invalid_argument(std::string("cpu backend: ") + op + " expects float32, got " +
                                dtype_name(v.dtype));
}

float* at(const MatView& v, int64_t r, int64_t c = 0) {
  return static_cast<float*>(v.data) + r * v.ld + c;
}

class CpuBackend final : public Backend {
 public:
  DeviceKind kind() const override { return DeviceKind::kCpu; }
  std::string name() const override { return "cpu"; }
  DType weight_dtype() const override { return DType::kF32; }
  DType act_dtype() const override { return DType::kF32; }
  DType cache_dtype() const override { return DType::kF32; }

  Tensor alloc(const std::vector<int64_t>& shape, DType dtype) override {
    Tensor t;
    t.dtype = dtype;
    t.device = DeviceKind::kCpu;
    t.shape = shape;
    const size_t bytes = std::max<size_t>(t.bytes(), 64);
    void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!p) throw std::bad_alloc();
    t.data = p;
    t.owner = std::shared_ptr<void>(p, std::free);
    return t;
  }
  bool copy_rows_batched(const MatView& src, int64_t src_stride, const MatView& dst,
                         int64_t dst_stride, int64_t batch) override {
    if (src.dtype != dst.dtype || src.rows != dst.rows || src.cols != dst.cols)
      throw std::invalid_argument("copy_rows_batched: src and dst must have one dtype and shape");
    const size_t es = dtype_size(src.dtype);
    for (int64_t i = 0; i < batch; ++i)
      for (int64_t r = 0; r < src.rows; ++r)
        std::memcpy(
            static_cast<char*>(dst.data) + (i * dst_stride + r * dst.ld) * int64_t(es),
            static_cast<const char*>(src.data) + (i * src_stride + r * src.ld) * int64_t(es),
            size_t(src.cols) * es);
    return true;
  }
  void upload_f32(Tensor& dst, const float* src) override {
    if (dst.dtype != DType::kF32) throw std::invalid_argument("cpu backend: upload_f32 to non-f32");
    std::memcpy(dst.data, src, dst.bytes());
  }
  void upload(Tensor& dst, const void* src, size_t bytes) override {
    if (bytes > dst.bytes()) throw std::invalid_argument("cpu backend: upload overflows tensor");
    std::memcpy(dst.data, src, bytes);
  }
  void download_f32(const MatView& src, float* dst) override {
    require_f32(src, "download_f32");
    for (int64_t r = 0; r < src.rows; ++r)
      std::memcpy(dst + r * src.cols, at(src, r), src.cols * sizeof(float));
  }
  void synchronize() override {}

  void linear(const MatView& x, const MatView& w, const MatView& y, float alpha,
              float beta) override {
    require_f32(x, "linear");
    require_f32(w, "linear");
    require_f32(y, "linear");
    if (x.cols != w.cols || y.rows != x.rows || y.cols != w.rows)
      throw std::invalid_argument("cpu backend: linear shape mismatch");
    linear_batched(x, 0, w, 0, true, y, 0, 1, alpha, beta);
  }

  void linear_batched(const MatView& x, int64_t x_stride, const MatView& w, int64_t w_stride,
                      bool w_out_by_in, const MatView& y, int64_t y_stride, int64_t batch,
                      float alpha, float beta) override {
    require_f32(x, "linear_batched");
    require_f32(w, "linear_batched");
    require_f32(y, "linear_batched");
    const int64_t n = w_out_by_in ? w.rows : w.cols;
    const int64_t k = w_out_by_in ? w.cols : w.rows;
    if (x.cols != k || y.rows != x.rows || y.cols != n)
      throw std::invalid_argument("cpu backend: linear_batched shape mismatch");
    if (x.rows == 0) return;
    // A few rows (decode): one GEMV per row. sgemm would first pack the whole weight matrix
    // (the 50K x d lm_head: tens of MB copied per call) to multiply it by one vector.
    if (x.rows <= kGemvMaxRows) {
      for (int64_t b = 0; b < batch; ++b)
        for (int64_t r = 0; r < x.rows; ++r)
          cblas_sgemv(CblasRowMajor, w_out_by_in ? CblasNoTrans : CblasTrans, int(w.rows),
                      int(w.cols), alpha, at(w, 0) + b * w_stride, int(w.ld),
                      at(x, r) + b * x_stride, 1, beta, at(y, r) + b * y_stride, 1);
      return;
    }
    for (int64_t b = 0; b < batch; ++b) {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, w_out_by_in ? CblasTrans : CblasNoTrans, int(x.rows),
                  int(n), int(k), alpha, at(x, 0) + b * x_stride, int(x.ld),
                  at(w, 0) + b * w_stride, int(w.ld), beta, at(y, 0) + b * y_stride, int(y.ld));
    }
  }

  void embed(const int32_t* tokens, int64_t n, const MatView& table, const MatView& out) override {
    require_f32(table, "embed");
    require_f32(out, "embed");
    for (int64_t i = 0; i < n; ++i) {
      if (tokens[i] < 0 || tokens[i] >= table.rows)
        throw std::out_of_range("cpu backend: token id " + std::to_string(tokens[i]) +
                                " outside the embedding table");
      std::memcpy(at(out, i), at(table, tokens[i]), table.cols * sizeof(float));
    }
  }

  void rms_norm(const MatView& x, const Tensor& w, float eps, float scale,
                const MatView& out) override {
    require_f32(x, "rms_norm");
    require_f32(out, "rms_norm");
    if (w.numel() != x.cols) throw std::invalid_argument("cpu backend: rms_norm weight size");
    const float* g = w.as<float>();
    for (int64_t r = 0; r < x.rows; ++r) {
      const float* xr = at(x, r);
      double ss = 0;
      for (int64_t c = 0; c < x.cols; ++c) ss += double(xr[c]) * xr[c];
      const float inv = float(1.0 / std::sqrt(ss / double(x.cols) + eps));
      float* o = at(out, r);
      for (int64_t c = 0; c < x.cols; ++c) o[c] = g[c] * (xr[c] * inv) * scale;
    }
  }

  void rope(const MatView& x, int64_t n_heads, int64_t head_stride, int64_t rot_offset,
            int64_t rot_dim, const int32_t* positions, float base) override {
    require_f32(x, "rope");
    const int64_t half = rot_dim / 2;
    std::vector<float> inv_freq(half);
    for (int64_t k = 0; k < half; ++k)
      inv_freq[k] = float(1.0 / std::pow(double(base), double(2 * k) / double(rot_dim)));
    for (int64_t r = 0; r < x.rows; ++r) {
      for (int64_t k = 0; k < half; ++k) {
        const float theta = float(positions[r]) * inv_freq[k];
        const float c = std::cos(theta), s = std::sin(theta);
        for (int64_t h = 0; h < n_heads; ++h) {
          float* v = at(x, r, h * head_stride + rot_offset);
          const float u1 = v[k], u2 = v[k + half];
          v[k] = u1 * c - u2 * s;
          v[k + half] = u1 * s + u2 * c;
        }
      }
    }
  }

  void silu_mul(const MatView& a, const MatView& b, const MatView& out) override {
    for (int64_t r = 0; r < a.rows; ++r)
      for (int64_t c = 0; c < a.cols; ++c) {
        const float v = *at(a, r, c);
        *at(out, r, c) = v / (1.0f + std::exp(-v)) * *at(b, r, c);
      }
  }
  void sigmoid_mul(const MatView& gate, const MatView& x) override {
    for (int64_t r = 0; r < x.rows; ++r)
      for (int64_t c = 0; c < x.cols; ++c)
        *at(x, r, c) *= 1.0f / (1.0f + std::exp(-*at(gate, r, c)));
  }
  void add(const MatView& x, const MatView& acc) override {
    require_f32(x, "add");
    require_f32(acc, "add");
    for (int64_t r = 0; r < x.rows; ++r)
      for (int64_t c = 0; c < x.cols; ++c) *at(acc, r, c) += *at(x, r, c);
  }
  void scale(const MatView& y, float alpha) override {
    for (int64_t r = 0; r < y.rows; ++r)
      for (int64_t c = 0; c < y.cols; ++c) *at(y, r, c) *= alpha;
  }
  void cache_write(const MatView& src, const int32_t* slots, const PagedCacheView& cache,
                   int32_t col_offset) override {
    write_cache_rows_cpu(src, slots, cache, col_offset);
  }
  void cache_gather(const PagedCacheView& cache, const int32_t* slots, int64_t n,
                    int32_t col_offset, const MatView& out) override {
    read_cache_rows_cpu(cache, slots, n, col_offset, out);
  }
  bool supports_cache_encoding(CacheEncoding) const override { return true; }
  void paged_attention(const PagedAttentionArgs& args) override { paged_attention_cpu(args); }
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend() {
  return std::make_unique<CpuBackend>();
}

}  // namespace mlra
