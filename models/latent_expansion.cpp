// The expanded-prefill plan of a step (latent_expansion.h): which suffix of sequences, and their
// scratch cache layout.
#include "models/latent_expansion.h"

#include <algorithm>

#include "models/shard_plan.h"
#include "models/variant_traits.h"

namespace mlra {

bool latent_expansion_supported(const ModelConfig& c) {
  // TPLA's slices are no single latent to up-project per head.
  return traits(c.variant.kind).prefill == PrefillForm::kAbsorbedOrExpanded && !c.tpla();
}

int64_t latent_expansion_row_bytes(const ModelConfig& c, int tp) {
  int64_t widest = 0;
  for (int r = 0; r < tp; ++r) {
    const ShardPlan plan = make_shard_plan(c, tp, r);
    const int64_t heads = int64_t(plan.heads.size()), latents = int64_t(plan.latents.size());
    widest = std::max(
        widest, latents * c.latent_dim() + 2 * heads * c.qk_nope_head_dim + c.qk_rope_head_dim);
  }
  return widest * 2;  // bf16 activations on the GPU
}

LatentExpansion plan_latent_expansion(const ModelConfig& c, int tp, const StepBatch& s,
                                      int32_t page_size) {
  LatentExpansion plan;
  const LatentPrefill mode = c.latent_prefill.mode;
  if (mode == LatentPrefill::kAbsorbed || !latent_expansion_supported(c)) return plan;
  const int32_t T = s.num_tokens(), S = s.num_seqs();
  if (T <= S || page_size <= 0) return plan;  // a pure decode step
  // Token range of each sequence (tokens are sequence-major, sequences in order).
  std::vector<int32_t> seq_begin(size_t(S) + 1, T);
  for (int32_t t = T - 1; t >= 0; --t) {
    const int32_t q = s.token_seq[size_t(t)];
    if (q < 0 || q >= S || (t + 1 < T && s.token_seq[size_t(t + 1)] < q)) return plan;
    seq_begin[size_t(q)] = t;
  }
  // Attention FLOPs per (query, key) pair and head, absorbed and expanded; up-projection FLOPs per
  // cached position and head (K_nope and V from d_c).
  const double dc = double(c.latent_dim()), dn = double(c.qk_nope_head_dim),
               dr = double(c.qk_rope_head_dim);
  const double absorbed_pair = 2.0 * (2.0 * dc + dr), expanded_pair = 2.0 * (2.0 * dn + dr);
  const double up_per_position = 2.0 * dc * 2.0 * dn;
  const int64_t row_bytes = latent_expansion_row_bytes(c, tp);

  int64_t rows = 0;
  int32_t first = S;
  for (int32_t q = S - 1; q >= 0; --q) {
    const int32_t b = seq_begin[size_t(q)], e = seq_begin[size_t(q) + 1];
    if (e - b < 2) break;
    const int32_t length = s.positions[size_t(e - 1)] + 1;
    const int64_t padded = (int64_t(length) + LatentExpansion::kScratchPage - 1) /
                           LatentExpansion::kScratchPage * LatentExpansion::kScratchPage;
    if ((rows + padded) * row_bytes > c.latent_prefill.scratch_bytes) break;
    if (mode == LatentPrefill::kAuto) {
      double pairs = 0.0;
      for (int32_t t = b; t < e; ++t) pairs += double(s.positions[size_t(t)]) + 1.0;
      if (pairs * (absorbed_pair - expanded_pair) <= double(padded) * up_per_position) break;
    }
    rows += padded;
    first = q;
  }
  if (first == S) return plan;

  plan.first_seq = first;
  plan.first_token = seq_begin[size_t(first)];
  plan.num_tokens = T - plan.first_token;
  plan.num_seqs = S - first;
  plan.scratch_rows = int32_t(rows);
  std::vector<int32_t> indptr{0}, indices, gather;
  gather.reserve(size_t(rows));
  for (int32_t q = first; q < S; ++q) {
    const int32_t length = s.positions[size_t(seq_begin[size_t(q) + 1] - 1)] + 1;
    const int32_t pages =
        (length + LatentExpansion::kScratchPage - 1) / LatentExpansion::kScratchPage;
    for (int32_t i = 0; i < pages; ++i) indices.push_back(indptr.back() + i);
    indptr.push_back(indptr.back() + pages);
    const int32_t* real_pages = s.page_indices.data() + s.page_indptr[size_t(q)];
    for (int32_t pos = 0; pos < pages * LatentExpansion::kScratchPage; ++pos) {
      const int32_t p = std::min(pos, length - 1);  // padding rows repeat the last position
      gather.push_back(real_pages[p / page_size] * page_size + p % page_size);
    }
  }
  plan.host.reserve(size_t(plan.num_tokens) + indptr.size() + indices.size() + gather.size());
  for (int32_t t = plan.first_token; t < T; ++t)
    plan.host.push_back(s.token_seq[size_t(t)] - first);
  for (const auto* v : {&indptr, &indices, &gather})
    plan.host.insert(plan.host.end(), v->begin(), v->end());
  return plan;
}

void upload_latent_expansion(Backend& b, LatentExpansion& plan) {
  if (!plan.active()) return;
  plan.device = b.alloc({int64_t(plan.host.size())}, DType::kI32);
  b.upload_async(plan.device, plan.host.data(), plan.host.size() * sizeof(int32_t));
  const int32_t* base = plan.device.as<int32_t>();
  plan.token_seq = base;
  plan.page_indptr = base + plan.num_tokens;
  plan.page_indices = plan.page_indptr + plan.num_seqs + 1;
  plan.gather_slots = plan.page_indices + plan.scratch_rows / LatentExpansion::kScratchPage;
}

}  // namespace mlra
