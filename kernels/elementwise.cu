// Element-wise kernels of the CUDA backend: dtype conversion, embedding gather, SwiGLU product,
// sigmoid gate, residual add, scaling, cache scatter and fill. All are memory-bound one-pass
// kernels over strided row-major views; math in f32 whatever the storage dtype.
// Invariant: one thread per element of the logical (rows x cols) view, grid-stride loop. Launched
// with PDL (pdl.cuh): each kernel waits for its predecessor before touching memory.
#include "kernels/cuda_check.h"
#include "kernels/cuda_ops.h"
#include "kernels/dtype_access.cuh"
#include "kernels/pdl.cuh"

namespace mlra::cuda {
namespace {

constexpr int kThreads = 256;

struct View {
  void* data;
  DType dtype;
  int64_t cols;
  int64_t ld;
  __device__ int64_t index(int64_t i) const { return (i / cols) * ld + i % cols; }
  __device__ float get(int64_t i) const { return load_as_f32(data, dtype, index(i)); }
  __device__ void set(int64_t i, float v) const { store_from_f32(data, dtype, index(i), v); }
};

View view(const MatView& m) {
  return {m.data, m.dtype, m.cols, m.ld};
}

unsigned blocks_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return unsigned(b < 65535 * 16 ? (b > 0 ? b : 1) : 65535 * 16);
}

enum class Binary { kSiluMul, kSigmoidMulInPlace, kAdd, kCopy };

// out = f(a, b) elementwise; for in-place ops out aliases b.
__global__ void binary_kernel(View a, View b, View out, int64_t n, Binary op) {
  pdl_wait();
  pdl_launch_dependents();
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float x = a.get(i);
    switch (op) {
      case Binary::kSiluMul:
        out.set(i, x / (1.0f + expf(-x)) * b.get(i));
        break;
      case Binary::kSigmoidMulInPlace:
        out.set(i, b.get(i) / (1.0f + expf(-x)));
        break;
      case Binary::kAdd:
        out.set(i, b.get(i) + x);
        break;
      case Binary::kCopy:
        out.set(i, x);
        break;
    }
  }
}

__global__ void scale_kernel(View y, int64_t n, float alpha) {
  pdl_wait();
  pdl_launch_dependents();
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    y.set(i, y.get(i) * alpha);
}

__global__ void fill_kernel(void* data, DType dtype, int64_t n, float value) {
  pdl_wait();
  pdl_launch_dependents();
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    store_from_f32(data, dtype, i, value);
}

__global__ void fill_random_kernel(void* data, DType dtype, int64_t n, uint64_t seed) {
  pdl_wait();
  pdl_launch_dependents();
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    uint64_t z = seed + uint64_t(i) * 0x9e3779b97f4a7c15ull;  // splitmix64
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    store_from_f32(data, dtype, i, float(z >> 40) * (2.0f / 16777216.0f) - 1.0f);
  }
}

// One block per token row: out[r] = table[tokens[r]].
__global__ void embed_kernel(const int32_t* tokens, View table, int64_t vocab, View out) {
  pdl_wait();
  pdl_launch_dependents();
  const int64_t r = blockIdx.x;
  const int32_t id = tokens[r];
  const bool ok = id >= 0 && id < vocab;
  for (int64_t c = threadIdx.x; c < out.cols; c += blockDim.x) {
    const float v = ok ? load_as_f32(table.data, table.dtype, int64_t(id) * table.ld + c) : NAN;
    store_from_f32(out.data, out.dtype, r * out.ld + c, v);
  }
}

// One block per source row: cache[slots[r]][col_offset + c] = src[r][c].
__global__ void cache_write_kernel(View src, const int32_t* slots, void* cache, DType cache_dtype,
                                   int64_t capacity, int32_t row_width, int32_t col_offset) {
  pdl_wait();
  pdl_launch_dependents();
  const int64_t r = blockIdx.x;
  const int64_t slot = slots[r];
  if (slot < 0 || slot >= capacity) return;
  for (int64_t c = threadIdx.x; c < src.cols; c += blockDim.x)
    store_from_f32(cache, cache_dtype, slot * row_width + col_offset + c,
                   load_as_f32(src.data, src.dtype, r * src.ld + c));
}

void require_same_shape(const MatView& a, const MatView& b, const char* what) {
  MLRA_REQUIRE(a.rows == b.rows && a.cols == b.cols, what);
}

void launch_binary(const MatView& a, const MatView& b, const MatView& out, Binary op,
                   cudaStream_t stream) {
  const int64_t n = a.rows * a.cols;
  if (n == 0) return;
  launch_pdl(binary_kernel, blocks_for(n), kThreads, 0, stream, view(a), view(b), view(out), n, op);
}

}  // namespace

void launch_convert(const MatView& src, const MatView& dst, cudaStream_t stream) {
  require_same_shape(src, dst, "convert: shape mismatch");
  launch_binary(src, dst, dst, Binary::kCopy, stream);
}

void launch_embed(const int32_t* tokens, int64_t n, const MatView& table, const MatView& out,
                  cudaStream_t stream) {
  MLRA_REQUIRE(out.rows >= n && out.cols == table.cols, "embed: output shape");
  if (n == 0) return;
  launch_pdl(embed_kernel, unsigned(n), kThreads, 0, stream, tokens, view(table), table.rows,
             view(out));
}

void launch_silu_mul(const MatView& a, const MatView& b, const MatView& out, cudaStream_t stream) {
  require_same_shape(a, b, "silu_mul: a/b shape mismatch");
  require_same_shape(a, out, "silu_mul: output shape mismatch");
  launch_binary(a, b, out, Binary::kSiluMul, stream);
}

void launch_sigmoid_mul(const MatView& gate, const MatView& x, cudaStream_t stream) {
  require_same_shape(gate, x, "sigmoid_mul: shape mismatch");
  launch_binary(gate, x, x, Binary::kSigmoidMulInPlace, stream);
}

void launch_add(const MatView& x, const MatView& acc, cudaStream_t stream) {
  require_same_shape(x, acc, "add: shape mismatch");
  launch_binary(x, acc, acc, Binary::kAdd, stream);
}

void launch_scale(const MatView& y, float alpha, cudaStream_t stream) {
  const int64_t n = y.rows * y.cols;
  if (n == 0) return;
  launch_pdl(scale_kernel, blocks_for(n), kThreads, 0, stream, view(y), n, alpha);
}

void launch_cache_write(const MatView& src, const int32_t* slots, const PagedCacheView& cache,
                        int32_t col_offset, cudaStream_t stream) {
  if (cache.encoding == CacheEncoding::kFp8E4M3)
    return launch_fp8_cache_write(src, slots, cache, col_offset, stream);
  MLRA_REQUIRE(col_offset >= 0 && col_offset + src.cols <= cache.row_width,
               "cache_write past the cache row");
  if (src.rows == 0) return;
  launch_pdl(cache_write_kernel, unsigned(src.rows), 128, 0, stream, view(src), slots, cache.data,
             cache.dtype, cache.num_pages * cache.page_size, cache.row_width, col_offset);
}

void launch_fill(void* data, DType dtype, int64_t n, float value, cudaStream_t stream) {
  if (n == 0) return;
  launch_pdl(fill_kernel, blocks_for(n), kThreads, 0, stream, data, dtype, n, value);
}

void launch_fill_random(void* data, DType dtype, int64_t n, uint64_t seed, cudaStream_t stream) {
  if (n == 0) return;
  launch_pdl(fill_random_kernel, blocks_for(n), kThreads, 0, stream, data, dtype, n, seed);
}

}  // namespace mlra::cuda
