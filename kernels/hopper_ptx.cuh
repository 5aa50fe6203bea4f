// Hopper (sm_90a) PTX primitives our tensor-core kernels share: cp.async, ldmatrix, mma.sync,
// named barriers, mbarriers + TMA tensor loads, the 128-byte shared-memory swizzle, and wgmma
// (bf16 or f16 operands, f32 accumulators) with its shared-memory descriptors. Thin wrappers, one
// instruction each; the layouts they assume are documented here. The device code is built for
// sm_90a only (kernels/CMakeLists.txt): the wgmma wrappers exist in that pass (MLRA_LATENT_WGMMA),
// and the host pass sees kernel bodies without them.
#pragma once

#if defined(__CUDA_ARCH__) && !defined(__CUDA_ARCH_FEAT_SM90_ALL)
#error "kernels/ needs sm_90a device code (wgmma, TMA): CMAKE_CUDA_ARCHITECTURES=90a"
#endif

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace mlra::cuda {

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return uint32_t(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
               "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n");
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

[[maybe_unused]] __device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// c += a (16x16 bf16, row) . b (16x8 bf16, col), f32 accumulate.
__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// The same with f16 operands.
__device__ __forceinline__ void mma_f16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                        uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

__device__ __forceinline__ uint32_t pack_f16(float lo, float hi) {
  const __half2 v = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

__device__ __forceinline__ void named_barrier(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads));
}
// Marks arrival without waiting: a producer's half of a named barrier whose consumers bar.sync it
// (the threads' earlier shared-memory writes are visible to them once their sync returns).
__device__ __forceinline__ void named_barrier_arrive(int id, int threads) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// Tensor-memory-access (TMA) loads completing on an mbarrier: one thread asks for a box of the
// cache tensor (64 dims x box rows, 128B-swizzled on arrival) and every thread waits on the
// stage's barrier phase.
__device__ __forceinline__ void mbar_init(uint32_t bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count));
}

// Thread 0 initialises `stages` pipeline mbarriers (8 bytes apart, one arrival each) and fences
// the initialisation; the caller's __syncthreads() then publishes them to the CTA.
__device__ __forceinline__ void init_stage_barriers(uint32_t first, int stages) {
  if (threadIdx.x != 0) return;
  for (int s = 0; s < stages; ++s) mbar_init(first + 8 * s, 1);
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
__device__ __forceinline__ void mbar_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes)
               : "memory");
}
// One plain arrival (a consumer releasing a stage to the producer).
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, "
        "0, p;\n}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
  } while (!done);
}
__device__ __forceinline__ void tma_load_2d(uint32_t dst, const void* map, int col, int row,
                                            uint32_t bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, "
      "%3}], [%4];\n" ::"r"(dst),
      "l"(map), "r"(col), "r"(row), "r"(bar)
      : "memory");
}
// The same through a 3D map (col, row, page): the FP8 cache's planes, pages apart.
__device__ __forceinline__ void tma_load_3d(uint32_t dst, const void* map, int col, int row,
                                            int page, uint32_t bar) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, "
      "%3, %4}], [%5];\n" ::"r"(dst),
      "l"(map), "r"(col), "r"(row), "r"(page), "r"(bar)
      : "memory");
}

// Shared-memory tiles (Q: kRows = 64 heads; cache tiles: kRows = kBN tokens) are kKB blocks of
// kRows x 128 B (64 dims of every row), each block 1024 B aligned. Within a block, row r's 16 B
// chunk c sits at chunk c ^ (r % 8): the CUTLASS/PTX "128B swizzle". 8 threads storing the 8
// chunks of one row, or 8 ldmatrix lanes reading one chunk of 8 consecutive rows, hit 8
// different bank groups.
template <int kRows>
__device__ __forceinline__ uint32_t swizzled_offset(int row, int col) {
  return uint32_t((col >> 6) * kRows * 128 + row * 128 + ((((col >> 3) & 7) ^ (row & 7)) << 4) +
                  (col & 7) * 2);
}

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define MLRA_LATENT_WGMMA 1
// Shared-memory matrix descriptor of a K-major operand in the 128-byte swizzle layout: start
// address, leading offset unused (1), stride offset 1024 B between 8-row groups, mode 1 =
// SWIZZLE_128B. Stepping k by 16 inside a 64-dim block adds 32 B to the start (the swizzle is
// applied to the computed addresses, the atom stays 1024 B aligned).
__device__ __forceinline__ uint64_t sw128_desc(uint32_t addr) {
  return uint64_t((addr & 0x3ffff) >> 4) | (uint64_t(1) << 16) | (uint64_t(1024 >> 4) << 32) |
         (uint64_t(1) << 62);
}
__device__ __forceinline__ void wgmma_fence() {
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void wgmma_wait_all() {
  asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
}
__device__ __forceinline__ void fence_proxy_async() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

// The accumulator operands of an m64nN wgmma: the N/2 f32 registers of d[N/8][4], in order.
#define MLRA_WGMMA_ACC16(d)                                                                     \
  "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]),     \
      "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), \
      "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3])
#define MLRA_WGMMA_ACC32(d)                                                                       \
  MLRA_WGMMA_ACC16(d), "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), \
      "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]),   \
      "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3])
#define MLRA_WGMMA_ACC64(d)                                                                        \
  MLRA_WGMMA_ACC32(d), "+f"(d[8][0]), "+f"(d[8][1]), "+f"(d[8][2]), "+f"(d[8][3]), "+f"(d[9][0]),  \
      "+f"(d[9][1]), "+f"(d[9][2]), "+f"(d[9][3]), "+f"(d[10][0]), "+f"(d[10][1]), "+f"(d[10][2]), \
      "+f"(d[10][3]), "+f"(d[11][0]), "+f"(d[11][1]), "+f"(d[11][2]), "+f"(d[11][3]),              \
      "+f"(d[12][0]), "+f"(d[12][1]), "+f"(d[12][2]), "+f"(d[12][3]), "+f"(d[13][0]),              \
      "+f"(d[13][1]), "+f"(d[13][2]), "+f"(d[13][3]), "+f"(d[14][0]), "+f"(d[14][1]),              \
      "+f"(d[14][2]), "+f"(d[14][3]), "+f"(d[15][0]), "+f"(d[15][1]), "+f"(d[15][2]),              \
      "+f"(d[15][3])
#define MLRA_WGMMA_D16 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}"
#define MLRA_WGMMA_D32                                                                     \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, " \
  "%19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}"
#define MLRA_WGMMA_D64                                                                     \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, " \
  "%19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, "  \
  "%36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, "  \
  "%53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}"

// d (64 x N, f32, per-warp fragments as mma.sync C tiles) (+)= A (64 x 16) . B (N x 16)^T, both
// operands from shared memory (K-major descriptors). kF16: A and B are f16, else bf16.
template <bool kF16 = false>
__device__ __forceinline__ void wgmma_n64(float (&d)[8][4], uint64_t a, uint64_t b,
                                          int accumulate) {
  if constexpr (kF16)
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 " MLRA_WGMMA_D32
        ", %32, %33, p, 1, 1, 0, 0;\n}\n"
        : MLRA_WGMMA_ACC32(d)
        : "l"(a), "l"(b), "r"(accumulate));
  else
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " MLRA_WGMMA_D32
        ", %32, %33, p, 1, 1, 0, 0;\n}\n"
        : MLRA_WGMMA_ACC32(d)
        : "l"(a), "l"(b), "r"(accumulate));
}
template <bool kF16 = false>
__device__ __forceinline__ void wgmma_n128(float (&d)[16][4], uint64_t a, uint64_t b,
                                           int accumulate) {
  if constexpr (kF16)
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 " MLRA_WGMMA_D64
        ", %64, %65, p, 1, 1, 0, 0;\n}\n"
        : MLRA_WGMMA_ACC64(d)
        : "l"(a), "l"(b), "r"(accumulate));
  else
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " MLRA_WGMMA_D64
        ", %64, %65, p, 1, 1, 0, 0;\n}\n"
        : MLRA_WGMMA_ACC64(d)
        : "l"(a), "l"(b), "r"(accumulate));
}
__device__ __forceinline__ void wgmma_n32(float (&d)[4][4], uint64_t a, uint64_t b,
                                          int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 " MLRA_WGMMA_D16
      ", %16, %17, p, 1, 1, 0, 0;\n}\n"
      : MLRA_WGMMA_ACC16(d)
      : "l"(a), "l"(b), "r"(accumulate));
}
// d (64 x 128, f32) += A (64 x 16, per-warp mma.sync A fragments in registers) . B (16 x 128),
// B given MN-major (transposed: value dims contiguous) in the 128B swizzle layout. kF16: A and B
// are f16, else bf16.
template <bool kF16 = false>
__device__ __forceinline__ void wgmma_rs_n128_tb(float (&d)[16][4], const uint32_t (&a)[4],
                                                 uint64_t b) {
  if constexpr (kF16)
    asm volatile("wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 " MLRA_WGMMA_D64
                 ", {%64, %65, %66, %67}, %68, 1, 1, 1, 1;\n"
                 : MLRA_WGMMA_ACC64(d)
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b));
  else
    asm volatile("wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " MLRA_WGMMA_D64
                 ", {%64, %65, %66, %67}, %68, 1, 1, 1, 1;\n"
                 : MLRA_WGMMA_ACC64(d)
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b));
}
// Descriptor of an MN-major operand in the 128B swizzle layout: leading offset = stride between
// 64-element MN blocks, stride offset = 1024 B between 8-row K groups.
__device__ __forceinline__ uint64_t sw128_mn_desc(uint32_t addr, uint32_t mn_block_stride) {
  return uint64_t((addr & 0x3ffff) >> 4) | (uint64_t((mn_block_stride & 0x3ffff) >> 4) << 16) |
         (uint64_t(1024 >> 4) << 32) | (uint64_t(1) << 62);
}
#endif

}  // namespace mlra::cuda
