// CUDA paged attention: runs the kernel family the caller asks for (PagedAttentionArgs::kernel) on
// its tensor-core kernels where the family's preconditions hold (dims, bf16, 16-byte aligned
// rows), else on the generic SIMT kernel; split-KV plan + merge around them. Multi-token steps of
// the 128-dim families go to the prefill kernel (prefill_attention.h), decode steps to the latent
// (latent_decode_attention.cu, latent_wide_attention.cu) or K/V (kv_decode_attention.cu) kernels.
// plan() sizes and fills the split-KV plan and workspace (no allocation happens in run(), so run()
// can be captured in a CUDA graph and replayed per layer); run() launches attention and merge.
// Invariant: run() uses the plan of the last plan() call, which must see the same step metadata.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/kernel_options.h"
#include "kernels/paged_attention.h"
#include "kernels/split_kv_plan.h"

namespace mlra::cuda {

// Heads [head0, head0 + rows) sharing one cache segment (same a/v offsets): one CTA row block.
struct HeadTile {
  int32_t head0 = 0;
  int32_t rows = 0;
  int32_t a_offset = 0;
  int32_t v_offset = 0;
};
constexpr int kMaxHeadTiles = 64;
struct HeadTiles {
  HeadTile tile[kMaxHeadTiles];
  int32_t count = 0;
};

// Everything a kernel needs, by value (device pointers).
struct AttentionParams {
  const void* q = nullptr;
  DType q_dtype = DType::kBF16;
  int64_t q_token_stride = 0;
  int64_t q_head_stride = 0;
  const void* cache = nullptr;
  DType cache_dtype = DType::kBF16;
  bool fp8_cache = false;  // FP8 layout (fp8_e4m3.h): codes dequantized on chip (fp8_tile.cuh)
  Fp8CacheLayout fp8;
  int32_t page_shift = 0;  // log2(page_size)
  int64_t cache_rows = 0;  // num_pages * page_size
  int32_t box_rows = 0;    // TMA box height: min(latent tile rows, page size)
  int32_t row_width = 0;
  int32_t r_offset = 0;
  int32_t a_dim = 0;
  int32_t r_dim = 0;
  int32_t v_dim = 0;
  const int32_t* token_seq = nullptr;
  const int32_t* token_pos = nullptr;
  const int32_t* page_indptr = nullptr;
  const int32_t* page_indices = nullptr;
  float scale_log2 = 0.0f;  // softmax scale * log2(e): scores live in the exp2 domain
  void* out = nullptr;
  DType out_dtype = DType::kBF16;
  int64_t out_token_stride = 0;
  int64_t out_head_stride = 0;
  // Partials of (slot, tile, row): o at ((slot * tiles + tile) * rows_max + row) * v_dim,
  // lse (log2 domain) at (slot * tiles + tile) * rows_max + row.
  float* partial_o = nullptr;
  float* partial_lse = nullptr;
  int32_t rows_max = 0;
};

// kKvRope128: per-head K (128) and V (128) at their own columns plus a 64-dim rope part shared by
// every head (expanded MLA / GLA prefill); prefill kernel only.
enum class AttentionPath { kLatent128, kLatent256, kLatent512, kKv128, kKvRope128, kGeneric };
const char* attention_path_name(AttentionPath p);

// Kernel launchers (one file each). grid = (plan max items, tiles.count).
void launch_latent_attention(const AttentionParams& p, const HeadTiles& tiles,
                             const SplitKvPlan& plan, int d_c, cudaStream_t stream);
void launch_kv_attention(const AttentionParams& p, const HeadTiles& tiles, const SplitKvPlan& plan,
                         cudaStream_t stream);
void launch_generic_attention(const AttentionParams& p, const HeadTiles& tiles,
                              const SplitKvPlan& plan, int values_per_lane, cudaStream_t stream);
void launch_split_kv_merge(const AttentionParams& p, const HeadTiles& tiles,
                           const SplitKvPlan& plan, cudaStream_t stream);
// Heads per tile the generic kernel supports for v_dim <= 32 * values_per_lane.
int generic_max_group(int values_per_lane);
// CTAs the latent kernel keeps resident per SM (sizes the split target).
int latent_ctas_per_sm(int d_c);
// Cached rows per latent kernel tile (64 for d_c 128 and 512, 128 for d_c 256).
int latent_tile_rows(int d_c);
// K/V decode kernel (kv_decode_attention.cu): query rows per CTA (heads of one KV head, padded)
// and its split-KV target (items) for a step of num_tokens over n_tiles head tiles; per_sm > 0
// overrides the rule with that many CTAs per SM (KernelOptions::kv_split_per_sm).
constexpr int kKvMaxRows = 16;
int kv_split_target(int num_sms, int n_tiles, int num_tokens, int per_sm);

class CudaPagedAttention {
 public:
  CudaPagedAttention(int device, const KernelOptions& options);
  ~CudaPagedAttention();
  CudaPagedAttention(const CudaPagedAttention&) = delete;
  CudaPagedAttention& operator=(const CudaPagedAttention&) = delete;

  // Which kernel serves these arguments: a.kernel's where its preconditions hold, else generic
  // (the expanded-prefill family runs on the prefill kernel only, see plan()).
  static AttentionPath choose_path(const PagedAttentionArgs& a);
  // Validates, groups heads into tiles, grows the workspace and computes the split plan.
  void plan(const PagedAttentionArgs& a, cudaStream_t stream);
  // Attention + merge with the current plan (no allocation, no host sync).
  void run(const PagedAttentionArgs& a, cudaStream_t stream);
  // Inside a step, plan() reuses the plan of an earlier call with the same key (the per-step
  // metadata is immutable until end_step()); outside, every plan() recomputes.
  void begin_step();
  void end_step();
  // Plans computed (plan kernel launches) since construction: tests check the reuse.
  int64_t plans_computed() const { return plans_computed_; }
  // Query tokens per CTA in the current plan (split_kv_plan.h: query packing).
  int32_t tokens_per_item() const { return plan_.shape.tokens_per_item; }
  // Most CTAs (items) per head tile the current plan aims at (the split-KV target).
  int32_t target_chunks() const { return plan_.shape.target_chunks; }
  // The current plan's shape: with the step's positions, plan_split_kv_host gives its items.
  const SplitKvShape& plan_shape() const { return plan_.shape; }
  // The path the current plan runs (choose_path's, or generic for the expanded-prefill layout in
  // a decode step).
  AttentionPath path() const { return path_; }
  // Whether the current plan runs on the 128-row prefill kernel (prefill_attention.h).
  bool uses_prefill_kernel() const { return prefill_; }

 private:
  void reserve(size_t bytes, cudaStream_t stream);

  int num_sms_ = 0;
  int kv_split_per_sm_ = 0;  // KernelOptions::kv_split_per_sm
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  // Outgrown workspaces stay allocated until destruction: a recorded graph may still point at
  // them (at most ~2x the final size in all, since each growth is >= 1.5x).
  std::vector<void*> retired_;
  AttentionPath path_ = AttentionPath::kGeneric;
  std::vector<HeadTile> tiles_;
  int32_t rows_max_ = 0;
  int32_t values_per_lane_ = 0;
  SplitKvPlan plan_;
  size_t partial_offset_ = 0;
  struct PlanKey {
    const int32_t* token_pos = nullptr;
    int32_t num_tokens = -1;
    int32_t target_chunks = 0;
    int32_t min_chunk_tiles = 0;
    int32_t tokens_per_item = 1;
    bool operator==(const PlanKey&) const = default;
  };
  bool in_step_ = false;
  bool plan_valid_ = false;  // plan_ was computed inside the current step for plan_key_
  PlanKey plan_key_;
  int64_t plans_computed_ = 0;
  bool prefill_ = false;  // the current plan runs on the prefill kernel
};

}  // namespace mlra::cuda
