// Generic paged attention (any a/r/v dims, any per-head offsets, f32/bf16/f16 or FP8 storage
// through fp8_cache.cuh): serves MHA/GQA/MQA (d 128), MFA (256), GTA's tied layout, the tiny test
// dims and every FP8 cache. Heads that share a cache segment (a GQA group) form one tile and are
// scored together, so each cached row is read once per tile. SIMT in f32: warp w of the CTA walks
// positions begin + w, + kWarps, ...; lanes split the dot products and the value dims; each warp
// keeps its own online softmax, and the warps' states are merged in shared memory at the end (final
// output or split-KV partial).
#include "kernels/cuda_check.h"
#include "kernels/dtype_access.cuh"
#include "kernels/fp8_cache.cuh"
#include "kernels/paged_attention_cuda.h"
#include "kernels/plan_grid_launch.cuh"

namespace mlra::cuda {
namespace {

constexpr int kWarps = 4;

// Value `col` of cache row `row` as f32, either encoding.
__device__ __forceinline__ float cache_value(const AttentionParams& p, int64_t row, int64_t col) {
  if (p.fp8_cache) return fp8_cache_value(p.cache, p.fp8, int64_t(1) << p.page_shift, row, col);
  return load_as_f32(p.cache, p.cache_dtype, row * p.row_width + col);
}

template <int kVpl>
constexpr int max_group() {
  return kVpl <= 4 ? 8 : 32 / kVpl;
}

template <int kVpl>
__global__ void __launch_bounds__(kWarps * 32)
    generic_attention_kernel(AttentionParams p, HeadTiles tiles, SplitKvPlan plan) {
  constexpr int kG = max_group<kVpl>();
  extern __shared__ float smem[];
  if (int(blockIdx.x) >= *plan.num_items) return;
  const SplitKvItem item = plan.items[blockIdx.x];
  const HeadTile tile = tiles.tile[blockIdx.y];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int qk_dim = p.a_dim + p.r_dim;
  float* q_s = smem;  // [kG][qk_dim], pre-scaled into the exp2 domain

  const int t = item.token;
  for (int i = threadIdx.x; i < kG * qk_dim; i += blockDim.x) {
    const int g = i / qk_dim, k = i % qk_dim;
    float v = 0.0f;
    if (g < tile.rows)
      v = load_as_f32(p.q, p.q_dtype,
                      t * p.q_token_stride + int64_t(tile.head0 + g) * p.q_head_stride + k);
    q_s[i] = v * p.scale_log2;
  }
  __syncthreads();

  const int seq = p.token_seq[t];
  const int32_t* pages = p.page_indices + p.page_indptr[seq];
  const int page_mask = (1 << p.page_shift) - 1;
  float m[kG], l[kG], acc[kG][kVpl];
#pragma unroll
  for (int g = 0; g < kG; ++g) {
    m[g] = -INFINITY;
    l[g] = 0.0f;
#pragma unroll
    for (int i = 0; i < kVpl; ++i) acc[g][i] = 0.0f;
  }
  for (int pos = item.kv_begin + warp; pos < item.kv_end; pos += kWarps) {
    const int64_t row = (int64_t(pages[pos >> p.page_shift]) << p.page_shift) + (pos & page_mask);
    float s[kG];
#pragma unroll
    for (int g = 0; g < kG; ++g) s[g] = 0.0f;
    for (int k = lane; k < qk_dim; k += 32) {
      const int64_t col = k < p.a_dim ? tile.a_offset + k : p.r_offset + (k - p.a_dim);
      const float kv = cache_value(p, row, col);
#pragma unroll
      for (int g = 0; g < kG; ++g) s[g] += q_s[g * qk_dim + k] * kv;
    }
#pragma unroll
    for (int g = 0; g < kG; ++g)
      for (int o = 16; o > 0; o >>= 1) s[g] += __shfl_xor_sync(0xffffffffu, s[g], o);
    float v[kVpl];
#pragma unroll
    for (int i = 0; i < kVpl; ++i) {
      const int d = lane + 32 * i;
      v[i] = d < p.v_dim ? cache_value(p, row, tile.v_offset + d) : 0.0f;
    }
#pragma unroll
    for (int g = 0; g < kG; ++g) {
      const float m_new = fmaxf(m[g], s[g]);
      const float corr = exp2f(m[g] - m_new), w = exp2f(s[g] - m_new);
      m[g] = m_new;
      l[g] = l[g] * corr + w;
#pragma unroll
      for (int i = 0; i < kVpl; ++i) acc[g][i] = acc[g][i] * corr + w * v[i];
    }
  }

  // Merge the warps: state of warp w, head g at st + (w * kG + g) * (v_dim + 2): [m, l, o...].
  float* st = smem + kG * qk_dim;
  const int stride = p.v_dim + 2;
#pragma unroll
  for (int g = 0; g < kG; ++g) {
    float* my = st + (warp * kG + g) * stride;
    if (lane == 0) {
      my[0] = m[g];
      my[1] = l[g];
    }
#pragma unroll
    for (int i = 0; i < kVpl; ++i)
      if (lane + 32 * i < p.v_dim) my[2 + lane + 32 * i] = acc[g][i];
  }
  __syncthreads();
  for (int i = threadIdx.x; i < tile.rows * p.v_dim; i += blockDim.x) {
    const int g = i / p.v_dim, d = i % p.v_dim;
    float mx = -INFINITY;
    for (int w = 0; w < kWarps; ++w) mx = fmaxf(mx, st[(w * kG + g) * stride]);
    float sum = 0.0f, o = 0.0f;
    for (int w = 0; w < kWarps; ++w) {
      const float* s = st + (w * kG + g) * stride;
      const float f = s[1] > 0.0f ? exp2f(s[0] - mx) : 0.0f;
      sum += s[1] * f;
      o += s[2 + d] * f;
    }
    if (item.partial < 0) {
      store_from_f32(p.out, p.out_dtype,
                     t * p.out_token_stride + int64_t(tile.head0 + g) * p.out_head_stride + d,
                     o / sum);
    } else {
      const int64_t slot_row = (int64_t(item.partial) * tiles.count + blockIdx.y) * p.rows_max + g;
      p.partial_o[slot_row * p.v_dim + d] = o / sum;
      if (d == 0) p.partial_lse[slot_row] = mx + log2f(sum);
    }
  }
}

template <int kVpl>
void launch(const AttentionParams& p, const HeadTiles& tiles, const SplitKvPlan& plan,
            cudaStream_t stream) {
  constexpr int kG = max_group<kVpl>();
  const size_t smem =
      sizeof(float) * (size_t(kG) * (p.a_dim + p.r_dim) + size_t(kWarps) * kG * (p.v_dim + 2));
  MLRA_REQUIRE(smem <= 200 * 1024, "generic attention: head dims too large");
  launch_plan_grid(generic_attention_kernel<kVpl>, plan, tiles, kWarps * 32, smem, stream, p, tiles,
                   plan);
}

}  // namespace

int generic_max_group(int values_per_lane) {
  switch (values_per_lane) {
    case 1:
      return max_group<1>();
    case 2:
      return max_group<2>();
    case 4:
      return max_group<4>();
    case 8:
      return max_group<8>();
    default:
      return max_group<16>();
  }
}

void launch_generic_attention(const AttentionParams& p, const HeadTiles& tiles,
                              const SplitKvPlan& plan, int values_per_lane, cudaStream_t stream) {
  MLRA_REQUIRE(p.v_dim <= 32 * values_per_lane, "generic attention: v_dim exceeds the kernel");
  for (int i = 0; i < tiles.count; ++i)
    MLRA_REQUIRE(tiles.tile[i].rows <= generic_max_group(values_per_lane),
                 "generic attention: head tile too large");
  if (plan.shape.num_tokens == 0 || tiles.count == 0) return;
  switch (values_per_lane) {
    case 1:
      return launch<1>(p, tiles, plan, stream);
    case 2:
      return launch<2>(p, tiles, plan, stream);
    case 4:
      return launch<4>(p, tiles, plan, stream);
    case 8:
      return launch<8>(p, tiles, plan, stream);
    case 16:
      return launch<16>(p, tiles, plan, stream);
    default:
      MLRA_REQUIRE(false, "generic attention: values_per_lane must be 1, 2, 4, 8 or 16");
  }
}

}  // namespace mlra::cuda
