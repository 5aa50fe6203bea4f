// The FP8 cache's writes and gathers on the GPU (layout and codec in fp8_e4m3.h, the same functions
// the CPU backend runs, so the bytes are identical for identical inputs). A write runs one block
// per (row, group): the group's amax is a block max (exact in any order), its scale amax / 448,
// then each thread encodes its values; one more block per row stores the bf16 tail.
#include <algorithm>

#include "kernels/cuda_check.h"
#include "kernels/cuda_ops.h"
#include "kernels/dtype_access.cuh"
#include "kernels/fp8_cache.cuh"
#include "kernels/pdl.cuh"

namespace mlra::cuda {
namespace {

constexpr int kThreads = 128;

struct WriteArgs {
  const void* src;  // [rows, cols], ld apart
  DType st;
  int64_t ld, cols;
  const int32_t* slots;
  uint8_t* cache;
  Fp8CacheLayout layout;
  int64_t page_size, capacity, col_offset;
  int64_t group0;   // first group the columns cover
  int64_t covered;  // groups the columns cover
};

__device__ __forceinline__ float block_max(float v) {
  __shared__ float warp_max[kThreads / 32];
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  if (threadIdx.x % 32 == 0) warp_max[threadIdx.x / 32] = v;
  __syncthreads();
  float m = 0.0f;
  for (int i = 0; i < kThreads / 32; ++i) m = fmaxf(m, warp_max[i]);
  return m;
}

// grid (rows, groups covered + 1): block y < groups covered quantizes group group0 + y, the last
// block stores the tail columns the write covers.
__global__ void __launch_bounds__(kThreads) fp8_write_kernel(WriteArgs a) {
  pdl_wait();
  pdl_launch_dependents();
  const int64_t r = blockIdx.x, slot = a.slots[r];
  if (slot < 0 || slot >= a.capacity) return;  // skipped, as the plain cache write does
  const Fp8CacheLayout& l = a.layout;
  uint8_t* page = a.cache + (slot / a.page_size) * l.page_bytes(a.page_size);
  const int64_t s = slot % a.page_size, q = l.quantized();
  if (int64_t(blockIdx.y) < a.covered) {
    const int64_t g = a.group0 + blockIdx.y, c0 = g * l.group_width;
    float amax = 0.0f;
    for (int64_t i = threadIdx.x; i < l.group_width; i += kThreads)
      amax = fmaxf(amax, fp8_abs(load_as_f32(a.src, a.st, r * a.ld + c0 + i - a.col_offset)));
    const float scale = fp8_group_scale(block_max(amax));
    for (int64_t i = threadIdx.x; i < l.group_width; i += kThreads)
      page[l.codes_at(s) + c0 + i] =
          fp8_quantize(load_as_f32(a.src, a.st, r * a.ld + c0 + i - a.col_offset), scale);
    if (threadIdx.x == 0)
      *reinterpret_cast<float*>(page + l.scales_at(a.page_size, s) + 4 * g) = scale;
    return;
  }
  uint16_t* tail = reinterpret_cast<uint16_t*>(page + l.tail_at(a.page_size, s));
  const int64_t tail0 = a.col_offset > q ? a.col_offset : q;
  for (int64_t c = tail0 + threadIdx.x; c < a.col_offset + a.cols; c += kThreads)
    tail[c - q] = bf16_encode(load_as_f32(a.src, a.st, r * a.ld + c - a.col_offset));
}

__global__ void __launch_bounds__(kThreads)
    fp8_gather_kernel(const uint8_t* cache, Fp8CacheLayout l, int64_t page_size, int64_t capacity,
                      const int32_t* slots, int64_t col_offset, void* out, DType ot, int64_t ld,
                      int64_t cols) {
  pdl_wait();
  pdl_launch_dependents();
  const int64_t r = blockIdx.x, row = slots[r];
  const bool ok = row >= 0 && row < capacity;  // as the plain gather (embed): NaN rows otherwise
  for (int64_t c = threadIdx.x; c < cols; c += kThreads)
    store_from_f32(out, ot, r * ld + c,
                   ok ? fp8_cache_value(cache, l, page_size, row, col_offset + c) : NAN);
}

void check_layout(const PagedCacheView& cache) {
  const Fp8CacheLayout& l = cache.fp8;
  MLRA_REQUIRE(cache.encoding == CacheEncoding::kFp8E4M3, "fp8 cache: not an FP8 cache view");
  MLRA_REQUIRE(l.groups >= 0 && l.group_width > 0 && l.tail >= 0 && l.values() == cache.row_width,
               "fp8 cache: layout does not add up to the row width");
  // Scales are read and written as aligned floats, the tail as aligned bf16.
  MLRA_REQUIRE(int64_t(cache.page_size) * l.quantized() % 4 == 0,
               "fp8 cache: page_size * quantized values must be a multiple of 4");
}

}  // namespace

void launch_fp8_cache_write(const MatView& src, const int32_t* slots, const PagedCacheView& cache,
                            int32_t col_offset, cudaStream_t stream) {
  check_layout(cache);
  const Fp8CacheLayout& l = cache.fp8;
  const int64_t begin = col_offset, end = begin + src.cols, q = l.quantized();
  MLRA_REQUIRE(begin >= 0 && end <= cache.row_width, "fp8 cache_write past the cache row");
  MLRA_REQUIRE(!(begin < q && begin % l.group_width) &&
                   !(std::min(end, q) > begin && std::min(end, q) % l.group_width),
               "fp8 cache_write must cover whole groups");
  if (src.rows == 0) return;
  const int64_t covered = begin < q ? (std::min(end, q) - begin) / l.group_width : 0;
  MLRA_REQUIRE(covered < 65535, "fp8 cache_write: too many groups");
  const WriteArgs a{src.data,
                    src.dtype,
                    src.ld,
                    src.cols,
                    slots,
                    static_cast<uint8_t*>(cache.data),
                    l,
                    cache.page_size,
                    cache.num_pages * cache.page_size,
                    begin,
                    begin / l.group_width,
                    covered};
  launch_pdl(fp8_write_kernel, dim3(unsigned(src.rows), unsigned(covered + 1)), kThreads, 0, stream,
             a);
}

void launch_fp8_cache_gather(const PagedCacheView& cache, const int32_t* slots, int64_t n,
                             int32_t col_offset, const MatView& out, cudaStream_t stream) {
  check_layout(cache);
  MLRA_REQUIRE(col_offset >= 0 && col_offset + out.cols <= cache.row_width,
               "fp8 cache_gather: columns outside the cache row");
  MLRA_REQUIRE(out.rows >= n, "fp8 cache_gather: fewer output rows than slots");
  if (n == 0) return;
  launch_pdl(fp8_gather_kernel, unsigned(n), kThreads, 0, stream,
             static_cast<const uint8_t*>(cache.data), cache.fp8, int64_t(cache.page_size),
             cache.num_pages * cache.page_size, slots, int64_t(col_offset), out.data, out.dtype,
             out.ld, out.cols);
}

}  // namespace mlra::cuda
