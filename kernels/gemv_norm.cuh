// The RMSNorm prologue of the fused GEMV (gemv.h, launch_gemv_norm): every block stages its own
// copy of the normed input x [M, K] = RMSNorm(acc (+ delta)) * w * scale in shared memory, so no
// separate norm launch precedes the product. The sum of squares runs in rms_norm.cu's order (256
// threads, thread v adding columns v, v + 256, ... in turn, then block_sum's order), so x holds the
// bits the composed rms_norm / add_rms_norm writes. One block writes x to `normed` for other
// readers; with delta the residual add acc += delta is written once, by the last block to finish
// reading acc (a device counter), so no block can read a half-updated acc. Internal to gemv*.cu.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "kernels/gemv_device.cuh"

namespace mlra::cuda::gemv_detail {

struct GemvNorm {
  const void* acc;  // [M, K], f32 (acc_f32) or bf16, acc_ld apart
  int64_t acc_ld;
  bool acc_f32;
  const __nv_bfloat16* delta;  // [M, K] or nullptr (then acc is only read)
  int64_t delta_ld;
  const __nv_bfloat16* w;  // [K] norm weight
  __nv_bfloat16* normed;   // [M, K] receives x
  int64_t normed_ld;
  float eps, scale;
  unsigned* arrivals;  // zero on entry with delta; left zero
};

constexpr int kNormThreads = 256;  // rms_norm.cu's block: the summation order reproduced here

// Dynamic shared memory of the prologue: src f32 [M, K] | w bf16 [K] | x bf16 [M, K].
inline size_t norm_smem_bytes(int64_t m, int64_t k) {
  return size_t(m * k * 4 + k * 2 + m * k * 2);
}

__device__ __forceinline__ uint4 load_u4(const void* p) {
  return *reinterpret_cast<const uint4*>(p);
}

// Stages x [M, K] (row m at xs + m * K) in `smem` (norm_smem_bytes(M, K), 16-byte aligned) and
// returns xs. Called by every thread of the block after pdl_wait(); ends with a barrier.
template <int M>
__device__ const __nv_bfloat16* stage_normed_x(const GemvNorm& n, int k, char* smem) {
  float* src = reinterpret_cast<float*>(smem);
  __nv_bfloat16* wsm = reinterpret_cast<__nv_bfloat16*>(src + M * k);
  __nv_bfloat16* xs = wsm + k;
  const int tid = threadIdx.x, nt = blockDim.x, chunks = k / 8;
  const int src_items = M * chunks, items = src_items + chunks;  // then the chunks of w

  // src = acc (+ delta) in f32 and w, 8 values per item, kBatch items' loads in flight at once.
  constexpr int kBatch = 2;
  for (int i0 = 0; i0 < items; i0 += kBatch * nt) {
    uint4 a0[kBatch], a1[kBatch], dv[kBatch];
#pragma unroll
    for (int j = 0; j < kBatch; ++j) {
      const int i = i0 + j * nt + tid, m = i / chunks, c = (i % chunks) * 8;
      a0[j] = a1[j] = dv[j] = make_uint4(0, 0, 0, 0);
      if (i < src_items) {
        if (n.acc_f32) {
          const float* p = static_cast<const float*>(n.acc) + m * n.acc_ld + c;
          a0[j] = load_u4(p);
          a1[j] = load_u4(p + 4);
        } else {
          a0[j] = load_u4(static_cast<const __nv_bfloat16*>(n.acc) + m * n.acc_ld + c);
        }
        if (n.delta) dv[j] = load_u4(n.delta + m * n.delta_ld + c);
      } else if (i < items) {
        a0[j] = load_u4(n.w + c);
      }
    }
#pragma unroll
    for (int j = 0; j < kBatch; ++j) {
      const int i = i0 + j * nt + tid, m = i / chunks, c = (i % chunks) * 8;
      if (i >= items) break;
      if (i >= src_items) {
        *reinterpret_cast<uint4*>(wsm + c) = a0[j];
        continue;
      }
      float f[8];
      if (n.acc_f32) {
        const uint32_t u[8] = {a0[j].x, a0[j].y, a0[j].z, a0[j].w,
                               a1[j].x, a1[j].y, a1[j].z, a1[j].w};
#pragma unroll
        for (int e = 0; e < 8; ++e) f[e] = __uint_as_float(u[e]);
      } else {
        unpack_bf16x8(a0[j], f);
      }
      if (n.delta) {
        float d[8];
        unpack_bf16x8(dv[j], d);
#pragma unroll
        for (int e = 0; e < 8; ++e) f[e] += d[e];
      }
      float4* out = reinterpret_cast<float4*>(src + m * k + c);
      out[0] = make_float4(f[0], f[1], f[2], f[3]);
      out[1] = make_float4(f[4], f[5], f[6], f[7]);
    }
  }
  __syncthreads();  // every read of acc by this block is done

  if (n.delta) {
    __shared__ bool last;
    if (tid == 0) {
      __threadfence();
      const unsigned blocks = gridDim.x * gridDim.y * gridDim.z;
      last = atomicAdd(n.arrivals, 1u) == blocks - 1;
    }
    __syncthreads();
    if (last) {  // every other block has read acc: write the sum back, once
      __threadfence();
      for (int i = tid; i < src_items; i += nt) {
        const int m = i / chunks, c = (i % chunks) * 8;
        float4* to = reinterpret_cast<float4*>(static_cast<float*>(const_cast<void*>(n.acc)) +
                                               m * n.acc_ld + c);
        const float4* from = reinterpret_cast<const float4*>(src + m * k + c);
        to[0] = from[0];
        to[1] = from[1];
      }
      if (tid == 0) *n.arrivals = 0;  // for the next launch (stream-ordered after this grid)
    }
  }

  __shared__ float warp_sums[kNormThreads / 32];
  for (int m = 0; m < M; ++m) {
    const float* row = src + m * k;
    for (int v0 = 0; v0 < kNormThreads; v0 += nt) {  // virtual thread v of rms_norm's block
      const int v = v0 + tid;
      float ss = 0.0f;
      if (v < kNormThreads)
        for (int c = v; c < k; c += kNormThreads) {
          const float x = row[c];
          ss += x * x;
        }
      for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
      if (v < kNormThreads && (tid & 31) == 0) warp_sums[v / 32] = ss;
    }
    __syncthreads();
    float total = 0.0f;
    for (int i = 0; i < kNormThreads / 32; ++i) total += warp_sums[i];
    const float inv = rsqrtf(total / float(k) + n.eps);
    for (int c = tid; c < k; c += nt)
      xs[m * k + c] = __float2bfloat16(__bfloat162float(wsm[c]) * (row[c] * inv) * n.scale);
    __syncthreads();  // x complete; warp_sums free for the next row
  }

  if (blockIdx.x == 0 && blockIdx.y == 0)
    for (int i = tid; i < src_items; i += nt) {
      const int m = i / chunks, c = (i % chunks) * 8;
      *reinterpret_cast<uint4*>(n.normed + m * n.normed_ld + c) = load_u4(xs + m * k + c);
    }
  return xs;
}

}  // namespace mlra::cuda::gemv_detail
