// Fused per-head projections of absorbed latent attention on the GPU for one-token steps (see
// Backend::latent_queries / latent_up_project, whose defaults are the reference): one launch each
// where the composition launches 2U + 1 and U products and a rope. The CUDA backend runs them for
// one-token steps over kMinFusedLatentUnits..kMaxLatentUnits units; every other step composes
// (kernels/README.md, fused ops).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace mlra::cuda {

constexpr int kMaxLatentUnits = 8;
// At one latent unit per rank (MLRA-4 TP4, MLA) the fused one-token step measured 0.77-0.92x the
// composed one on an H100 (mlra-bench decode, batch 1), so fewer units than this run composed.
constexpr int kMinFusedLatentUnits = 4;

struct LatentUnitDev {
  const __nv_bfloat16* w_uk = nullptr;  // [n_heads, dn, width]
  const __nv_bfloat16* w_uv = nullptr;  // [n_heads, dn, width]
  int32_t head0 = 0, n_heads = 0, v0 = 0;
};

// One token's rows. Every pointer bf16 and 16 B aligned where read 8-wide (rope_w rows, c_q,
// W_UV rows, z).
struct LatentProjParams {
  LatentUnitDev unit[kMaxLatentUnits];
  int32_t n_units = 0, n_virt = 0, heads = 0;
  int32_t dn = 0, dr = 0, width = 0, r_q = 0;
  const __nv_bfloat16* q_nope = nullptr;  // [heads * dn]
  const __nv_bfloat16* cq = nullptr;      // [r_q]
  const __nv_bfloat16* rope_w = nullptr;  // [heads * dr, r_q], rope_ld apart
  int64_t rope_ld = 0;
  const int32_t* positions = nullptr;  // [1]
  double rope_base = 10000.0;
  __nv_bfloat16* qv = nullptr;       // [n_virt * (width + dr)]
  const __nv_bfloat16* z = nullptr;  // [n_virt * width]
  __nv_bfloat16* o = nullptr;        // [heads * dn]
  float alpha = 1.0f;
};

// What the queries kernel takes: 1..8 units, width = 8 * (a divisor of 32), dn within a thread's
// loads, even dr, r_q % 8 == 0, and latent_queries_smem(p) <= 48 KB. The up-projection takes
// 1..8 units and width % 8 == 0.
bool latent_projections_support(const LatentProjParams& p);
size_t latent_queries_smem(const LatentProjParams& p);
void launch_latent_queries(const LatentProjParams& p, cudaStream_t stream);
void launch_latent_up(const LatentProjParams& p, cudaStream_t stream);

}  // namespace mlra::cuda
