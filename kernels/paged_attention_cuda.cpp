// Host side of CUDA paged attention: argument validation, path choice (the requested family's
// tensor-core kernel where its preconditions hold, else the generic kernel), grouping of heads that
// share a cache segment into CTA tiles, workspace sizing and the split-KV plan, then the attention
// + merge launches (see paged_attention_cuda.h).
#include "kernels/paged_attention_cuda.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "kernels/cuda_check.h"
#include "kernels/prefill_attention.h"

namespace mlra::cuda {
namespace {

bool is_pow2(int64_t v) {
  return v > 0 && (v & (v - 1)) == 0;
}

int log2_int(int64_t v) {
  int s = 0;
  while ((int64_t(1) << s) < v) ++s;
  return s;
}

void validate(const PagedAttentionArgs& a) {
  auto fail = [](const std::string& m) { throw std::invalid_argument("paged_attention: " + m); };
  if (int(a.a_offset.size()) != a.num_heads || int(a.v_offset.size()) != a.num_heads)
    fail("a_offset/v_offset must have one entry per head");
  for (int h = 0; h < a.num_heads; ++h) {
    if (a.a_offset[h] < 0 || a.a_offset[h] + a.a_dim > a.cache.row_width)
      fail("a segment of head " + std::to_string(h) + " outside the cache row");
    if (a.v_offset[h] < 0 || a.v_offset[h] + a.v_dim > a.cache.row_width)
      fail("v segment of head " + std::to_string(h) + " outside the cache row");
  }
  if (a.r_dim > 0 && (a.r_offset < 0 || a.r_offset + a.r_dim > a.cache.row_width))
    fail("r segment outside the cache row");
  if (!is_pow2(a.cache.page_size)) fail("page size must be a power of two");
  if (a.v_dim < 1 || a.v_dim > 512) fail("v_dim must be in 1..512");
  if (a.a_dim + a.r_dim < 1 || a.a_dim + a.r_dim > 1024) fail("a_dim + r_dim must be in 1..1024");
  const bool fp8 = a.cache.encoding == CacheEncoding::kFp8E4M3;
  for (DType t : {a.q_dtype, a.out_dtype, fp8 ? DType::kF32 : a.cache.dtype})
    if (t != DType::kF32 && t != DType::kBF16 && t != DType::kF16) fail("float dtypes only");
  if (fp8 && (a.cache.fp8.values() != a.cache.row_width ||
              int64_t(a.cache.page_size) * a.cache.fp8.quantized() % 4 != 0))
    fail("FP8 cache layout must fill the row and keep its scales 4-byte aligned");
}

bool aligned16(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0;
}

// An FP8 cache takes the tensor-core kernel of its family (codes by TMA, dequantized in shared
// memory: fp8_tile.cuh) when every head reads whole groups (a latent: one group of a_dim values
// and the 64-wide bf16 tail; K/V: one 128-wide group for K and one for V) and every plane keeps
// TMA's 16-byte alignment; every other FP8 case runs on the generic kernel.
AttentionPath choose_fp8_path(const PagedAttentionArgs& a) {
  const Fp8CacheLayout& l = a.cache.fp8;
  const int64_t ps = a.cache.page_size;
  bool ok = a.q_dtype == DType::kBF16 && aligned16(a.q) && aligned16(a.cache.data) &&
            a.q_token_stride % 8 == 0 && a.q_head_stride % 8 == 0 && l.quantized() % 16 == 0 &&
            l.page_bytes(ps) % 16 == 0 && ps >= 8 && a.a_dim == a.v_dim && l.group_width == a.a_dim;
  if (ok && a.kernel == AttentionKernel::kLatent) {
    ok = a.r_dim == 64 && l.tail == 64 && a.r_offset == l.quantized() && l.tail_at(ps, 0) % 16 == 0;
    for (int h = 0; ok && h < a.num_heads; ++h)
      ok = a.a_offset[h] % a.a_dim == 0 && a.v_offset[h] == a.a_offset[h];
    if (!ok) return AttentionPath::kGeneric;
    if (a.a_dim == 128) return AttentionPath::kLatent128;
    if (a.a_dim == 256) return AttentionPath::kLatent256;
    if (a.a_dim == 512) return AttentionPath::kLatent512;
    return AttentionPath::kGeneric;
  }
  if (ok && a.kernel == AttentionKernel::kKv) {
    ok = a.r_dim == 0 && l.tail == 0 && a.a_dim == 128;
    for (int h = 0; ok && h < a.num_heads; ++h)
      ok = a.a_offset[h] % 128 == 0 && a.v_offset[h] % 128 == 0 && a.v_offset[h] != a.a_offset[h];
    return ok ? AttentionPath::kKv128 : AttentionPath::kGeneric;
  }
  return AttentionPath::kGeneric;
}

// Runs of consecutive heads with identical segments, cut into tiles of at most max_rows.
std::vector<HeadTile> group_heads(const PagedAttentionArgs& a, int max_rows) {
  std::vector<HeadTile> tiles;
  for (int h = 0; h < a.num_heads; ++h) {
    HeadTile* last = tiles.empty() ? nullptr : &tiles.back();
    if (last && last->rows < max_rows && last->a_offset == a.a_offset[h] &&
        last->v_offset == a.v_offset[h] && last->head0 + last->rows == h) {
      ++last->rows;
    } else {
      tiles.push_back({h, 1, a.a_offset[h], a.v_offset[h]});
    }
  }
  return tiles;
}

int values_per_lane(int v_dim) {
  int v = 1;
  while (32 * v < v_dim) v *= 2;
  return v;
}

}  // namespace

const char* attention_path_name(AttentionPath p) {
  switch (p) {
    case AttentionPath::kLatent128:
      return "latent-128";
    case AttentionPath::kLatent256:
      return "latent-256";
    case AttentionPath::kLatent512:
      return "latent-512";
    case AttentionPath::kKv128:
      return "kv-128";
    case AttentionPath::kKvRope128:
      return "kv-rope-128";
    default:
      return "generic";
  }
}

CudaPagedAttention::CudaPagedAttention(int device, const KernelOptions& options)
    : kv_split_per_sm_(options.kv_split_per_sm) {
  if (const std::string why = kernel_options_error(options); !why.empty())
    throw std::invalid_argument("paged attention: kernel options: " + why);
  MLRA_CUDA_CHECK(cudaDeviceGetAttribute(&num_sms_, cudaDevAttrMultiProcessorCount, device));
}

CudaPagedAttention::~CudaPagedAttention() {
  if (workspace_) cudaFree(workspace_);
  for (void* p : retired_) cudaFree(p);
}

AttentionPath CudaPagedAttention::choose_path(const PagedAttentionArgs& a) {
  if (a.kernel == AttentionKernel::kGeneric || a.num_heads == 0) return AttentionPath::kGeneric;
  if (a.cache.encoding == CacheEncoding::kFp8E4M3) return choose_fp8_path(a);
  // Every tensor-core kernel: bf16 operands, 16-byte aligned q rows (cp.async) and cache segments
  // (the TMA tensor map: 16-byte aligned base and row pitch, 64-dim boxes at 8-element columns).
  if (a.q_dtype != DType::kBF16 || a.cache.dtype != DType::kBF16 || !aligned16(a.q) ||
      !aligned16(a.cache.data) || a.q_token_stride % 8 || a.q_head_stride % 8 ||
      a.cache.row_width % 8 || a.r_offset % 8)
    return AttentionPath::kGeneric;
  for (int h = 0; h < a.num_heads; ++h)
    if (a.a_offset[h] % 8 || a.v_offset[h] % 8) return AttentionPath::kGeneric;
  // Whether every head reads its values at its key segment (latent) or apart from it (K/V).
  auto values_at_keys = [&](bool same) {
    for (int h = 0; h < a.num_heads; ++h)
      if ((a.a_offset[h] == a.v_offset[h]) != same) return false;
    return true;
  };
  switch (a.kernel) {
    case AttentionKernel::kLatent:
      if (a.r_dim != 64 || a.a_dim != a.v_dim || !values_at_keys(true))
        return AttentionPath::kGeneric;
      if (a.a_dim == 128) return AttentionPath::kLatent128;
      if (a.a_dim == 256) return AttentionPath::kLatent256;
      if (a.a_dim == 512) return AttentionPath::kLatent512;
      return AttentionPath::kGeneric;
    case AttentionKernel::kKv:
      return a.r_dim == 0 && a.a_dim == 128 && a.v_dim == 128 && values_at_keys(false)
                 ? AttentionPath::kKv128
                 : AttentionPath::kGeneric;
    case AttentionKernel::kKvSharedRope:
      return a.r_dim == 64 && a.a_dim == 128 && a.v_dim == 128 && values_at_keys(false)
                 ? AttentionPath::kKvRope128
                 : AttentionPath::kGeneric;
    default:
      return AttentionPath::kGeneric;
  }
}

void CudaPagedAttention::reserve(size_t bytes, cudaStream_t stream) {
  if (bytes <= workspace_bytes_) return;
  const size_t grown = std::max(bytes, workspace_bytes_ + workspace_bytes_ / 2);
  if (workspace_) retired_.push_back(workspace_);
  workspace_ = nullptr;
  workspace_bytes_ = 0;
  MLRA_CUDA_CHECK(cudaMallocAsync(&workspace_, grown, stream));
  workspace_bytes_ = grown;
}

void CudaPagedAttention::plan(const PagedAttentionArgs& a, cudaStream_t stream) {
  validate(a);
  path_ = choose_path(a);
  // Steps whose sequences bring several tokens (prefill chunks) of the 128-dim paths go to the
  // 128-row prefill kernel, decode steps to the decode kernels. The expanded-prefill layout has no
  // decode kernel.
  const bool multi_token = a.num_tokens > a.num_seqs;
  prefill_ = multi_token && (path_ == AttentionPath::kKv128 || path_ == AttentionPath::kLatent128 ||
                             path_ == AttentionPath::kKvRope128);
  if (path_ == AttentionPath::kKvRope128 && !prefill_) path_ = AttentionPath::kGeneric;
  int ctas = num_sms_;
  if (path_ == AttentionPath::kGeneric) {
    values_per_lane_ = values_per_lane(a.v_dim);
    rows_max_ = generic_max_group(values_per_lane_);
    ctas = num_sms_ * 4;
  } else if (path_ == AttentionPath::kKv128) {
    rows_max_ = prefill_ ? kPrefillRows : kKvMaxRows;
  } else {
    rows_max_ = prefill_ ? kPrefillRows : 64;
    ctas = prefill_ ? num_sms_ : num_sms_ * latent_ctas_per_sm(a.a_dim);
  }
  tiles_ = group_heads(a, rows_max_);
  const int n_tiles = int(tiles_.size());
  const int batch_tiles = std::min(n_tiles, kMaxHeadTiles);

  SplitKvShape shape;
  shape.num_tokens = a.num_tokens;
  shape.target_chunks = path_ == AttentionPath::kKv128 && !prefill_
                            ? kv_split_target(num_sms_, n_tiles, a.num_tokens, kv_split_per_sm_)
                            : std::max(1, ctas / std::max(1, n_tiles));
  shape.min_chunk_tiles = 2;
  // Query packing when some sequence brings several tokens (prefill chunks): as many tokens per
  // CTA as its rows hold, so each cache tile loaded feeds all of them (24 heads: 5 tokens in the
  // prefill kernel's 128 rows, 2 in the wide latent kernel's 64).
  if (path_ != AttentionPath::kGeneric && multi_token) {
    int widest = 1;
    for (const HeadTile& t : tiles_) widest = std::max(widest, int(t.rows));
    shape.tokens_per_item = std::max(1, rows_max_ / widest);
  }
  const size_t plan_bytes = (split_kv_plan_bytes(shape) + 255) / 256 * 256;
  const size_t rows = size_t(shape.max_partials()) * batch_tiles * rows_max_;
  const size_t partial_bytes = rows * (size_t(a.v_dim) + 1) * sizeof(float);
  const PlanKey key{a.token_pos, a.num_tokens, shape.target_chunks, shape.min_chunk_tiles,
                    shape.tokens_per_item};
  void* before = workspace_;
  reserve(plan_bytes + partial_bytes + 256, stream);
  // The partials of a later layer may need more room (more head tiles) without changing the plan:
  // a grown workspace moves the plan, so it is recomputed then too.
  if (in_step_ && plan_valid_ && key == plan_key_ && workspace_ == before) return;
  plan_ = split_kv_plan_at(workspace_, shape);
  partial_offset_ = plan_bytes;
  launch_split_kv_plan(a.token_pos, a.token_seq, plan_, stream);
  ++plans_computed_;
  plan_key_ = key;
  plan_valid_ = in_step_;
}

void CudaPagedAttention::begin_step() {
  in_step_ = true;
  plan_valid_ = false;
}

void CudaPagedAttention::end_step() {
  in_step_ = false;
  plan_valid_ = false;
}

void CudaPagedAttention::run(const PagedAttentionArgs& a, cudaStream_t stream) {
  MLRA_REQUIRE(plan_.items != nullptr && plan_.shape.num_tokens == a.num_tokens,
               "paged_attention: run() without a matching plan()");
  if (a.num_tokens == 0 || a.num_heads == 0) return;
  AttentionParams p;
  p.q = a.q;
  p.q_dtype = a.q_dtype;
  p.q_token_stride = a.q_token_stride;
  p.q_head_stride = a.q_head_stride;
  p.cache = a.cache.data;
  p.cache_dtype = a.cache.dtype;
  p.fp8_cache = a.cache.encoding == CacheEncoding::kFp8E4M3;
  p.fp8 = a.cache.fp8;
  p.page_shift = log2_int(a.cache.page_size);
  p.cache_rows = a.cache.num_pages * a.cache.page_size;
  if (path_ == AttentionPath::kKv128 || path_ == AttentionPath::kKvRope128)
    p.box_rows = std::min(int32_t(kPlanTile), a.cache.page_size);
  else if (path_ != AttentionPath::kGeneric)
    p.box_rows = std::min(latent_tile_rows(a.a_dim), a.cache.page_size);
  p.row_width = a.cache.row_width;
  p.r_offset = a.r_offset;
  p.a_dim = a.a_dim;
  p.r_dim = a.r_dim;
  p.v_dim = a.v_dim;
  p.token_seq = a.token_seq;
  p.token_pos = a.token_pos;
  p.page_indptr = a.page_indptr;
  p.page_indices = a.page_indices;
  p.scale_log2 = float(double(a.scale) * 1.4426950408889634);
  p.out = a.out;
  p.out_dtype = a.out_dtype;
  p.out_token_stride = a.out_token_stride;
  p.out_head_stride = a.out_head_stride;
  p.rows_max = rows_max_;
  const size_t batch_tiles = std::min<size_t>(tiles_.size(), kMaxHeadTiles);
  const size_t rows = size_t(plan_.shape.max_partials()) * batch_tiles * size_t(rows_max_);
  p.partial_o = reinterpret_cast<float*>(static_cast<char*>(workspace_) + partial_offset_);
  p.partial_lse = p.partial_o + rows * size_t(a.v_dim);

  for (size_t begin = 0; begin < tiles_.size(); begin += kMaxHeadTiles) {
    HeadTiles batch;
    batch.count = int32_t(std::min<size_t>(kMaxHeadTiles, tiles_.size() - begin));
    std::copy_n(tiles_.begin() + begin, batch.count, batch.tile);
    if (path_ == AttentionPath::kGeneric)
      launch_generic_attention(p, batch, plan_, values_per_lane_, stream);
    else if (prefill_)
      launch_prefill_attention(p, batch, plan_, path_, stream);
    else if (path_ == AttentionPath::kKv128)
      launch_kv_attention(p, batch, plan_, stream);
    else
      launch_latent_attention(p, batch, plan_, a.a_dim, stream);
    launch_split_kv_merge(p, batch, plan_, stream);
  }
}

}  // namespace mlra::cuda
