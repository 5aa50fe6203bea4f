// The online-softmax step both paged-attention tensor-core kernels take per cache tile, on the
// mma accumulator layout: a warp's score fragments s[nb][e] hold rows lane/4 (e = 0, 1) and
// lane/4 + 8 (e = 2, 3) of its 16, at positions start + 8 nb + 2 (lane % 4) + (e & 1).
#pragma once

#include <cmath>
#include <cstdint>

#include "kernels/hopper_ptx.cuh"

namespace mlra::cuda {

// Masks positions at or past each row's end, moves the scores to the exp2 domain, updates the
// running max m and sum l (this thread's partial sum: the quad is summed at the end), turns s into
// unnormalised probabilities and returns in corr the factor by which every output accumulated so
// far must be rescaled (the max's correction, per row of this thread).
// kMayBeEmpty: a row may have seen no valid position yet (a packed row past its causal end, a
// warp's slice past a sequence's end); its probabilities then stay 0, never exp2(-inf - -inf).
template <bool kMayBeEmpty, int NB>
__device__ __forceinline__ void online_softmax_update(float (&s)[NB][4], int start,
                                                      const int (&row_end)[2], float scale_log2,
                                                      float (&m)[2], float (&l)[2],
                                                      float (&corr)[2]) {
  const int lane = threadIdx.x % 32;
  float mx[2] = {m[0], m[1]};
#pragma unroll
  for (int nb = 0; nb < NB; ++nb)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int pos = start + nb * 8 + (lane % 4) * 2 + (e & 1);
      const float v = pos < row_end[e >> 1] ? s[nb][e] * scale_log2 : -INFINITY;
      s[nb][e] = v;
      mx[e >> 1] = fmaxf(mx[e >> 1], v);
    }
  float base[2], row_sum[2] = {0.0f, 0.0f};
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 1));
    mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 2));
    base[i] = kMayBeEmpty && mx[i] == -INFINITY ? 0.0f : mx[i];
    corr[i] = exp2f(m[i] - base[i]);
    m[i] = mx[i];
  }
#pragma unroll
  for (int nb = 0; nb < NB; ++nb)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      s[nb][e] = exp2f(s[nb][e] - base[e >> 1]);
      row_sum[e >> 1] += s[nb][e];
    }
#pragma unroll
  for (int i = 0; i < 2; ++i) l[i] = l[i] * corr[i] + row_sum[i];
}

// Scales output fragments by their rows' correction (rows lane/4 and lane/4 + 8).
template <int NO>
__device__ __forceinline__ void rescale_rows(float (&o)[NO][4], const float (&corr)[2]) {
#pragma unroll
  for (int nb = 0; nb < NO; ++nb) {
    o[nb][0] *= corr[0];
    o[nb][1] *= corr[0];
    o[nb][2] *= corr[1];
    o[nb][3] *= corr[1];
  }
}

// The whole step for a warp that owns both the scores and the outputs of its rows.
template <bool kMayBeEmpty, int NB, int NO>
__device__ __forceinline__ void online_softmax_step(float (&s)[NB][4], float (&o)[NO][4], int start,
                                                    const int (&row_end)[2], float scale_log2,
                                                    float (&m)[2], float (&l)[2]) {
  float corr[2];
  online_softmax_update<kMayBeEmpty>(s, start, row_end, scale_log2, m, l, corr);
  rescale_rows(o, corr);
}

// Probabilities of k16 step kk (fragments 2kk, 2kk + 1) as the bf16 A operand of P.V.
template <int NB>
__device__ __forceinline__ void probability_fragment(const float (&s)[NB][4], int kk,
                                                     uint32_t (&a)[4]) {
  a[0] = pack_bf16(s[2 * kk][0], s[2 * kk][1]);
  a[1] = pack_bf16(s[2 * kk][2], s[2 * kk][3]);
  a[2] = pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]);
  a[3] = pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3]);
}

// Value tiles of code values whose per-column (cached token) scales are folded out of V: turns
// the probabilities s (P, from online_softmax_update) into P' = P x scale_col / g_row, where g is
// the row's running max of P x scale (so P' <= 1 and its largest terms keep f16's full
// precision), and corr into the factor the row's accumulator needs: corr x g_old / g_new. The
// accumulator then holds O / g: the row's result is its accumulator times g, over l (the sum of
// the unscaled P, as online_softmax_update keeps it). g starts at 0 and never falls below
// kFoldMinG once a tile is folded, so 1 / g stays finite (P x scale below 2^-114 then reaches f16's
// subnormals: terms under 2^-114 x 448 of the row's result, whose largest probability is 1).
constexpr float kFoldMinG = 0x1p-100f;

template <int NB>
__device__ __forceinline__ void fold_value_scales(float (&s)[NB][4], const float2 (&c)[NB],
                                                  float (&g)[2], float (&corr)[2]) {
  float mx[2] = {0.0f, 0.0f};
#pragma unroll
  for (int nb = 0; nb < NB; ++nb) {
    s[nb][0] *= c[nb].x;
    s[nb][1] *= c[nb].y;
    s[nb][2] *= c[nb].x;
    s[nb][3] *= c[nb].y;
    mx[0] = fmaxf(mx[0], fmaxf(s[nb][0], s[nb][1]));
    mx[1] = fmaxf(mx[1], fmaxf(s[nb][2], s[nb][3]));
  }
  float inv[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 1));
    mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 2));
    const float kept = g[i] * corr[i], g_new = fmaxf(fmaxf(kept, mx[i]), kFoldMinG);
    inv[i] = 1.0f / g_new;
    // g unchanged (in the running max's units): the accumulator keeps its scale exactly.
    corr[i] = g_new > kept ? kept * inv[i] : 1.0f;
    g[i] = g_new;
  }
#pragma unroll
  for (int nb = 0; nb < NB; ++nb)
#pragma unroll
    for (int e = 0; e < 4; ++e) s[nb][e] *= inv[e >> 1];
}

// Probabilities of k16 step kk as the f16 A operand of P.V (P' <= 1 of fold_value_scales).
template <int NB>
__device__ __forceinline__ void probability_fragment_f16(const float (&s)[NB][4], int kk,
                                                         uint32_t (&a)[4]) {
  a[0] = pack_f16(s[2 * kk][0], s[2 * kk][1]);
  a[1] = pack_f16(s[2 * kk][2], s[2 * kk][3]);
  a[2] = pack_f16(s[2 * kk + 1][0], s[2 * kk + 1][1]);
  a[3] = pack_f16(s[2 * kk + 1][2], s[2 * kk + 1][3]);
}

}  // namespace mlra::cuda
