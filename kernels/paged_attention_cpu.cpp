// CPU reference paged attention: for every (token, head), one pass over the sequence's cached
// positions 0..pos through its page table, exact softmax in double precision. An FP8 cache is
// read through its dequantized float32 rows (paged_cache_cpu.h).
#include "kernels/paged_attention_cpu.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/paged_cache_cpu.h"

namespace mlra {
namespace {

void check_args(const PagedAttentionArgs& a) {
  auto fail = [](const std::string& m) { throw std::invalid_argument("paged_attention: " + m); };
  if (a.q_dtype != DType::kF32 || a.out_dtype != DType::kF32)
    fail("the CPU reference takes float32 queries and outputs only");
  if (a.cache.encoding == CacheEncoding::kPlain && a.cache.dtype != DType::kF32)
    fail("the CPU reference reads a float32 or FP8 cache only");
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
}

}  // namespace

void paged_attention_cpu(const PagedAttentionArgs& a) {
  check_args(a);
  const float* q = static_cast<const float*>(a.q);
  CacheRowReader rows(a.cache);
  float* out = static_cast<float*>(a.out);
  const int64_t ps = a.cache.page_size;
  std::vector<double> scores;
  std::vector<double> acc(a.v_dim);
  for (int t = 0; t < a.num_tokens; ++t) {
    const int s = a.token_seq[t];
    if (s < 0 || s >= a.num_seqs) throw std::invalid_argument("paged_attention: bad token_seq");
    const int64_t n_ctx = int64_t(a.token_pos[t]) + 1;
    const int32_t* pages = a.page_indices + a.page_indptr[s];
    const int64_t n_pages = a.page_indptr[s + 1] - a.page_indptr[s];
    if (n_ctx > n_pages * ps)
      throw std::invalid_argument("paged_attention: position " + std::to_string(n_ctx - 1) +
                                  " not covered by the page table of sequence " +
                                  std::to_string(s));
    rows.prepare(s, pages, n_ctx);
    scores.resize(n_ctx);
    for (int h = 0; h < a.num_heads; ++h) {
      const float* qa = q + t * a.q_token_stride + h * a.q_head_stride;
      const float* qr = qa + a.a_dim;
      double mx = -INFINITY;
      for (int64_t p = 0; p < n_ctx; ++p) {
        const float* row = rows.row(p);
        double dot = 0;
        const float* ka = row + a.a_offset[h];
        for (int i = 0; i < a.a_dim; ++i) dot += double(qa[i]) * ka[i];
        const float* kr = row + a.r_offset;
        for (int i = 0; i < a.r_dim; ++i) dot += double(qr[i]) * kr[i];
        scores[p] = dot * a.scale;
        mx = std::max(mx, scores[p]);
      }
      double denom = 0;
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t p = 0; p < n_ctx; ++p) {
        const double w = std::exp(scores[p] - mx);
        denom += w;
        const float* v = rows.row(p) + a.v_offset[h];
        for (int i = 0; i < a.v_dim; ++i) acc[i] += w * v[i];
      }
      float* o = out + t * a.out_token_stride + h * a.out_head_stride;
      for (int i = 0; i < a.v_dim; ++i) o[i] = float(acc[i] / denom);
    }
  }
}

}  // namespace mlra
