// Fused per-head projections of absorbed latent attention on the GPU (see Backend::latent_queries
// / latent_up_project, whose defaults are the reference). Two kernel pairs: the one-token kernels
// (latent_projections_one.cu) and the tiled 1..8 token kernels (latent_projections.cu);
// KernelOptions picks which steps take which (kernels/README.md, fused ops).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace mlra::cuda {

constexpr int kMaxLatentUnits = 8;
// The tiled kernels take steps of up to 8 tokens (decode batches): a block reads each weight once
// for all its tokens (T FMAs per weight, cheap beside the load), where the composition launches
// 2U + 1 and U products.
constexpr int kMaxLatentTokens = 8;

struct LatentUnitDev {
  const __nv_bfloat16* w_uk = nullptr;  // [n_heads, dn, width]
  const __nv_bfloat16* w_uv = nullptr;  // [n_heads, dn, width]
  int32_t head0 = 0, n_heads = 0, v0 = 0;
};

// Every pointer bf16 and 16 B aligned where read 8-wide (rope_w rows, W_UV rows, z rows).
struct LatentProjParams {
  LatentUnitDev unit[kMaxLatentUnits];
  int32_t n_units = 0, n_virt = 0, heads = 0, tokens = 0;
  int32_t dn = 0, dr = 0, width = 0, r_q = 0;
  const __nv_bfloat16* q_nope = nullptr;
  int64_t q_nope_ld = 0;
  const __nv_bfloat16* cq = nullptr;
  int64_t cq_ld = 0;
  const __nv_bfloat16* rope_w = nullptr;
  int64_t rope_ld = 0;
  const int32_t* positions = nullptr;
  double rope_base = 10000.0;
  __nv_bfloat16* qv = nullptr;
  int64_t qv_ld = 0;
  const __nv_bfloat16* z = nullptr;
  int64_t z_ld = 0;
  __nv_bfloat16* o = nullptr;
  int64_t o_ld = 0;
  float alpha = 1.0f;
  bool prefetch_l2 = false;  // tiled kernels: first weights into L2 before the PDL wait
};

// The tiled kernels. What they take: 1..8 tokens and units, width = 8 * (a divisor of 32), dn
// within a thread's loads, even dr, r_q % 8 == 0, and latent_queries_smem(p) <= 48 KB.
bool latent_projections_support(const LatentProjParams& p);
size_t latent_queries_smem(const LatentProjParams& p);
void launch_latent_queries(const LatentProjParams& p, cudaStream_t stream);
void launch_latent_up(const LatentProjParams& p, cudaStream_t stream);

// The one-token kernels. What they take: one token, 1..8 units, width % 8 == 0, even dr,
// r_q % 8 == 0 and latent_queries_one_smem(p) <= 48 KB (p.prefetch_l2 is not read).
bool latent_projections_one_support(const LatentProjParams& p);
size_t latent_queries_one_smem(const LatentProjParams& p);
void launch_latent_queries_one(const LatentProjParams& p, cudaStream_t stream);
void launch_latent_up_one(const LatentProjParams& p, cudaStream_t stream);

}  // namespace mlra::cuda
