// TPLA's prefill/decode separation: sequences whose prefill starts at position 0 in this step
// get exact MLA attention over the step's own full (transformed) latents, held in a scratch
// paged cache for the step; the sliced cache is written as usual, so decode later runs TPLA on
// it. Every rank computes the same exact result scaled by 1/tp: the all-reduce restores it.
#include <stdexcept>

#include "models/latent_attention.h"

namespace mlra {

void LatentAttention::exact_prefill(const Tensor& cq, const Tensor& q_nope,
                                    const Tensor& normed_latent, const MatView& x,
                                    const StepContext& step, const MatView& o_exact) {
  const ModelConfig& c = config_;
  Backend& b = backend_;
  const StepBatch& s = *step.host;
  const int64_t T = step.num_tokens, dc = c.latent_dim(), dr = c.qk_rope_head_dim;
  constexpr int32_t kPage = 64;
  // Scratch layout: every sequence of the step gets fresh pages for its in-step tokens only.
  std::vector<int32_t> indptr{0}, indices, pos(static_cast<size_t>(T)),
      slots(static_cast<size_t>(T));
  int32_t next_page = 0;
  for (int32_t t = 0, seq = -1, index = 0, base = 0; t < T; ++t) {
    if (s.token_seq[size_t(t)] != seq) {
      seq = s.token_seq[size_t(t)];
      index = 0;
      base = next_page;
      int32_t count = 0;
      while (t + count < T && s.token_seq[size_t(t + count)] == seq) ++count;
      next_page += (count + kPage - 1) / kPage;
      for (int32_t p = base; p < next_page; ++p) indices.push_back(p);
      indptr.push_back(next_page);
    }
    pos[size_t(t)] = index;
    slots[size_t(t)] = base * kPage + index;
    ++index;
  }
  if (int64_t(indptr.size()) != step.num_seqs + 1)
    throw std::logic_error("tpla exact prefill: tokens are not grouped by sequence");
  auto upload = [&](const std::vector<int32_t>& v) {
    Tensor t = b.alloc({int64_t(v.size())}, DType::kI32);
    b.upload(t, v.data(), v.size() * sizeof(int32_t));
    return t;
  };
  Tensor d_pos = upload(pos), d_slots = upload(slots), d_indptr = upload(indptr),
         d_indices = upload(indices);
  StepContext scratch_step = step;
  scratch_step.positions = d_pos.as<int32_t>();
  scratch_step.slots = d_slots.as<int32_t>();
  scratch_step.page_indptr = d_indptr.as<int32_t>();
  scratch_step.page_indices = d_indices.as<int32_t>();

  const int64_t row = dc + dr;
  Tensor full = b.alloc({T, row}, b.act_dtype());
  const MatView full_mat = as_mat(full, row);
  b.linear(as_mat(normed_latent, dc), as_mat(exact_proj_, dc), full_mat.cols_slice(0, dc), 1.0f,
           0.0f);
  b.linear(x, as_mat(kv_rope_, c.n_embd), full_mat.cols_slice(dc, dr), 1.0f, 0.0f);
  b.rope(full_mat, 1, row, dc, dr, step.positions, c.rope_base);
  Tensor scratch = b.alloc({next_page, kPage, row}, b.cache_dtype());
  const PagedCacheView view{scratch.data, scratch.dtype, next_page, kPage, int32_t(row)};
  b.cache_write(full_mat, scratch_step.slots, view, 0);

  const std::vector<Unit> units{exact_};
  Tensor qe =
      virtual_queries(units, dc, as_mat(cq, c.q_lora_rank),
                      as_mat(q_nope, int64_t(plan_.heads.size()) * c.qk_nope_head_dim), step);
  Tensor ze = attend(units, dc, qe, view, int32_t(dc), scratch_step);
  up_project(units, dc, ze, o_exact, 1.0f / float(plan_.tp));
}

}  // namespace mlra
