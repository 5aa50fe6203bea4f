// The machinery of the cooperative persistent decode kernels (mlp_block.cu, attn_block.cu): a
// block of kThreads threads streams weight rows 16 bytes per thread, kRows rows per step, two
// steps in flight, against a row vector in shared memory, and sums each row in a fixed order
// (warp butterfly, then warps in order): deterministic, no atomics on data. Between phases every
// block of the (co-resident) grid meets at grid_barrier, whose words need no reset.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "kernels/gemv_device.cuh"

namespace mlra::cuda::persistent {

using namespace gemv_detail;

constexpr int kThreads = 384, kWarps = kThreads / 32;
constexpr int kRows = 8;  // rows per step: 8 loads of 16 bytes per thread

// First of n items owned by block b of `blocks` (shares differ by at most one).
__host__ __device__ inline int share_begin(int n, int b, int blocks) {
  return int(int64_t(n) * b / blocks);
}

struct Step {
  uint4 w[kRows];
};

// load_stream, kept in program order with the other volatile asm (pdl_wait, the grid barrier's
// accesses), so the weight loads issued early stay ahead of the waits they are meant to cover.
__device__ __forceinline__ uint4 load_weights(const __nv_bfloat16* p) {
  uint4 v;
  asm volatile(
      "{\n\t.reg .u64 g;\n\tcvta.to.global.u64 g, %4;\n\t"
      "ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [g];\n\t}"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p));
  return v;
}

// Rows [0, nrows) of one product of K = 8 * chunks - (tail ? 8 - tail : 0) columns; step s covers
// rows (s / kc) * kRows + [0, kRows) at chunk threadIdx.x + (s % kc) * kThreads.
struct RowWalk {
  int nrows, chunks, tail, kc;
  __device__ int steps() const { return (nrows + kRows - 1) / kRows * kc; }
};

template <class Load>
__device__ __forceinline__ void load_step(Step& st, const RowWalk& rw, int s, const Load& load) {
  const int r0 = (s / rw.kc) * kRows, c = int(threadIdx.x) + (s % rw.kc) * kThreads;
#pragma unroll
  for (int r = 0; r < kRows; ++r)
    st.w[r] = r0 + r < rw.nrows && c < rw.chunks ? load(r0 + r, c) : make_uint4(0, 0, 0, 0);
}

// acc[r] += the step's chunk of row r . the same chunk of xs (xs is zero past K; w is zeroed
// past K in a tail chunk, where the row's pad may hold anything).
__device__ __forceinline__ void compute_step(const Step& st, const RowWalk& rw, int s,
                                             const __nv_bfloat16* xs, float (&acc)[kRows]) {
  const int c = int(threadIdx.x) + (s % rw.kc) * kThreads;
  if (c >= rw.chunks) return;
  float xf[8];
  unpack_bf16x8(*reinterpret_cast<const uint4*>(xs + int64_t(c) * 8), xf);
  const bool partial = rw.tail != 0 && c == rw.chunks - 1;
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    float wf[8];
    unpack_bf16x8(partial ? keep_bf16(st.w[r], rw.tail) : st.w[r], wf);
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[r] = fmaf(xf[j], wf[j], acc[r]);
  }
}

// After the last chunk slot of a row group: each warp's sums of its rows -> part[warp][row].
__device__ __forceinline__ void finish_group(const RowWalk& rw, int s, float (&acc)[kRows],
                                             float* part, int stride, int row_offset) {
  if (s % rw.kc != rw.kc - 1) return;
  const int r0 = (s / rw.kc) * kRows, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    for (int off = 16; off > 0; off >>= 1) acc[r] += __shfl_xor_sync(0xffffffffu, acc[r], off);
    if (lane == 0 && r0 + r < rw.nrows) part[warp * stride + row_offset + r0 + r] = acc[r];
    acc[r] = 0.0f;
  }
}

// Every step of rw, two in flight; s0 already holds step 0 (issued by the caller, early).
template <class Load>
__device__ __forceinline__ void run_rows(Step& s0, const RowWalk& rw, const Load& load,
                                         const __nv_bfloat16* xs, float* part, int stride,
                                         int row_offset) {
  const int n = rw.steps();
  float acc[kRows] = {};
  Step s1;
  for (int s = 0; s < n;) {
    if (s + 1 < n) load_step(s1, rw, s + 1, load);
    compute_step(s0, rw, s, xs, acc);
    finish_group(rw, s, acc, part, stride, row_offset);
    if (++s >= n) break;
    if (s + 1 < n) load_step(s0, rw, s + 1, load);
    compute_step(s1, rw, s, xs, acc);
    finish_group(rw, s, acc, part, stride, row_offset);
    ++s;
  }
}

__device__ __forceinline__ unsigned ld_acquire(const unsigned* p) {
  unsigned v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];\n" : "=r"(v) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ void st_release(unsigned* p, unsigned v) {
  asm volatile("st.release.gpu.global.u32 [%0], %1;\n" ::"l"(p), "r"(v) : "memory");
}

// Every block of the (co-resident) grid arrives before any leaves; writes before it are visible
// to reads after it in every block. bar[0] counts arrivals and is back at 0 when the barrier
// opens; bar[1] is the generation, bumped once per barrier (wrapping), so the words need no
// reset between launches or graph replays (launches are ordered: the next one passes
// pdl_wait() first).
__device__ __forceinline__ void grid_barrier(unsigned* bar) {
  __syncthreads();
  if (threadIdx.x == 0) {
    const unsigned gen = ld_acquire(bar + 1);  // unchanged until every block has arrived
    __threadfence();                           // this block's writes before its arrival
    if (atomicAdd(bar, 1u) == gridDim.x - 1) {
      __threadfence();  // every other block's writes (their fence + arrival) before ours
      atomicExch(bar, 0u);
      st_release(bar + 1, gen + 1);
    } else {
      while (ld_acquire(bar + 1) == gen) __nanosleep(32);
    }
    __threadfence();
  }
  __syncthreads();
}

__device__ __forceinline__ void bulk_copy_g2s(uint32_t dst, const void* src, uint32_t bytes,
                                              uint32_t bar) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::
          "r"(dst),
      "l"(src), "r"(bytes), "r"(bar)
      : "memory");
}

__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

}  // namespace mlra::cuda::persistent
