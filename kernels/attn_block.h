// The front of the attention half of a one-token latent decode layer (Backend::attn_block, not
// TPLA), up to the attention kernel, in one cooperative persistent launch:
//   phase A: xp = x . x_proj^T ([W_qa x | raw latents | k_pe]);
//   phase B: c_q = RMSNorm(xp[:r_q]) * q_norm * q_scale (every block norms the row into its shared
//            memory; block 0 writes cq); q_nope = c_q . q_b_nope^T; q_pe = RoPE(c_q . W_rope^T)
//            into each virtual head's rope columns of qv; the cache entry (latent_entry of
//            latent_cache_write.cuh: each latent normed * kv_scale, k_pe roped, written to xp and
//            to the cache slot);
//   phase C: q~ = W_UK^T q_nope for every virtual head into qv.
// Grid barriers between the phases; before each one every block issues the loads of its first
// weights of the next phase (weights never change within a step), and its first phase-A loads
// go out before pdl_wait(), so the launch boundaries of the composition (a drained last wave,
// then a fresh DRAM latency) disappear.
// Rounding points as in the composition with the fused one-token queries kernel
// (latent_projections.cu): xp, cq, q_nope, q~ bf16 after f32 sums; q_pe roped in f32, then
// rounded once. The sums run in another (fixed) order than the composition's GEMVs, so results
// match it to rounding, not bit for bit. An FP8 cache is written by the quantizing write from the
// finished row, a second launch (as launch_latent_cache_write does).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <map>

#include "kernels/backend.h"
#include "kernels/latent_projections.h"
#include "kernels/paged_attention.h"
#include "kernels/tensor.h"

namespace mlra::cuda {

// One row (M = 1); every matrix bf16 and row-major. x [1, d]; x_proj [r_q + groups * width + dr,
// d]; xp [1, that]; q_norm [r_q]; cq [1, r_q]; q_b_nope [heads * dn, r_q]; q_nope [1, heads *
// dn]; rope_w [heads * dr, r_q]; units as the fused queries kernel takes them (w_uk [n_heads, dn,
// width] each); latent_norms [groups * width]; qv [1, n_virt * (width + dr)]; positions, slots [1]
// on the device.
struct AttnBlockOperands {
  MatView x, x_proj, xp;
  const void* q_norm = nullptr;
  DType q_norm_dtype = DType::kBF16;
  float q_scale = 1.0f;
  MatView cq, q_b_nope, q_nope, rope_w;
  LatentUnitDev unit[kMaxLatentUnits];
  int n_units = 0, dn = 0, dr = 0, width = 0;
  const void* latent_norms = nullptr;
  DType latent_norms_dtype = DType::kBF16;
  int groups = 0;
  float kv_scale = 1.0f, eps = 0.0f;
  const int32_t* positions = nullptr;
  float rope_base = 10000.0f;
  const int32_t* slots = nullptr;
  PagedCacheView cache;
  MatView qv;
};

// Owns what the persistent kernel keeps between launches on one device (as MlpBlockKernel): two
// barrier words that need no reset, and whether the runtime takes a cooperative launch with the
// PDL attribute, eagerly and while recording. One per backend; its launches are ordered (one
// stream).
class AttnBlockKernel {
 public:
  explicit AttnBlockKernel(int device);
  ~AttnBlockKernel();
  AttnBlockKernel(const AttnBlockKernel&) = delete;
  AttnBlockKernel& operator=(const AttnBlockKernel&) = delete;

  // True when launch() takes these operands: the shapes above with d, r_q multiples of 8 (<=
  // kMaxK), 16-byte aligned weight rows and x, 1..8 units each with w_uk, width % 8 == 0, dn <=
  // 256, even dr, groups >= 1, and a plain or FP8 cache whose row holds [latents | k_pe].
  bool supports(const AttnBlockOperands& o) const;
  // Enqueues the kernel (and the FP8 cache write where the cache is FP8) on `stream`; requires
  // supports(o). Graph capturable.
  void launch(const AttnBlockOperands& o, cudaStream_t stream);
  // False only while `stream` records and the runtime refused to record a cooperative launch.
  bool runs_on(cudaStream_t stream) const;
  bool uses_pdl() const { return pdl_; }
  bool capturable() const { return capturable_; }

  static constexpr int64_t kMaxK = 16384;  // d and r_q: the row vector in shared memory

 private:
  int grid_for(size_t smem);

  int device_ = 0;
  unsigned* barrier_ = nullptr;  // [count, generation]
  bool pdl_ = false, capturable_ = false;
  int sms_ = 0;
  std::map<size_t, int> blocks_per_sm_;  // by dynamic shared memory bytes
};

// The kernel's view of Backend::attn_block's arguments (the CUDA backend's and the GPU test's one
// conversion); false where the kernel cannot take them (a unit without w_uk, more units than the
// kernel holds, weights not bf16, norms of the wrong size).
bool attn_block_operands(const Backend::AttnBlockArgs& a, AttnBlockOperands& o);

}  // namespace mlra::cuda
