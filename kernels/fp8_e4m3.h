// The FP8 cache encoding, one definition for the CPU backend and the CUDA kernels, so both store
// the same bits for the same values: OCP FP8 E4M3 ("e4m3fn": bias 7, largest finite 448,
// subnormals down to 2^-9, no infinities, 0x7F / 0xFF the only NaNs) with one float32 scale per
// group of values (a latent head or a K / V head of one token).
//   scale = amax / 448   (float32 division; amax over the group's values)
//   code  = e4m3(x / scale), rounded to nearest even, saturating at +-448
//   value = e4m3_value(code) * scale
// A group whose amax is 0, or so small that amax / 448 underflows to 0, stores scale 0 and codes
// 0 (it reads back as exact zeros). Inputs are sanitized first (NaN -> 0, magnitudes above 2^127,
// infinities included, -> 2^127), so scales and dequantized values are finite and no NaN code is
// ever written. Every step is an exactly rounded float32
// operation or integer arithmetic: no rounding-mode or fast-math dependence.
//
// An FP8 cache row of a token holds `groups` groups of `group_width` values (quantized) followed
// by `tail` values stored as bf16 (a RoPE key). A page of page_size rows stores three planes, each
// row-major: the codes [page_size][groups * group_width] u8, the scales [page_size][groups] f32,
// the tail [page_size][tail] bf16 (planes rather than interleaved rows keep every plane's rows at
// their natural alignment for vector loads and TMA boxes).
#pragma once

#include <cstdint>
#include <cstring>

#ifdef __CUDACC__
#define MLRA_HD __host__ __device__
#else
#define MLRA_HD
#endif

namespace mlra {

constexpr float kFp8E4M3Max = 448.0f;

MLRA_HD inline uint32_t f32_bits(float x) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(x);
#else
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
#endif
}

MLRA_HD inline float f32_from_bits(uint32_t u) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(u);
#else
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
#endif
}

// m / 2^s rounded to nearest, ties to even (s in [1, 31]).
MLRA_HD inline uint32_t shift_round_even(uint32_t m, int s) {
  const uint32_t q = m >> s, rem = m & ((1u << s) - 1u), half = 1u << (s - 1);
  return q + ((rem > half || (rem == half && (q & 1u))) ? 1u : 0u);
}

// float32 -> E4M3 code, round to nearest even, |y| > 448 saturates to +-448, NaN -> 0.
MLRA_HD inline uint8_t fp8_e4m3_encode(float y) {
  const uint32_t u = f32_bits(y);
  const uint32_t sign = (u >> 24) & 0x80u;
  const uint32_t a = u & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return 0;                       // NaN
  if (a >= 0x43E00000u) return uint8_t(sign | 0x7Eu);  // |y| >= 448 (and inf): 448
  const uint32_t e = a >> 23;                          // biased float32 exponent
  if (e >= 121) {                                      // |y| >= 2^-6: an E4M3 normal
    // Drop 20 of the 23 mantissa bits with round-to-even; a carry into the exponent is the
    // correctly rounded result too. Rebias 127 -> 7.
    const uint32_t r = shift_round_even(a, 20);
    return uint8_t(sign | (r - (120u << 3)));
  }
  // Subnormal range: multiples of 2^-9, i.e. the significand shifted to units of 2^-9. A result
  // of 8 is the smallest normal, 2^-6, whose code is 8 as well.
  if (e < 110) return uint8_t(sign);               // below 2^-17: rounds to zero
  const uint32_t m = (a & 0x7FFFFFu) | 0x800000u;  // value = m * 2^(e - 150)
  return uint8_t(sign | shift_round_even(m, int(141 - e)));
}

// E4M3 code -> float32 (exact). The NaN codes, never written, read back as NaN.
MLRA_HD inline float fp8_e4m3_decode(uint8_t code) {
  const uint32_t sign = uint32_t(code & 0x80u) << 24;
  const uint32_t e = (code >> 3) & 0xFu, m = code & 0x7u;
  if (e == 0xF && m == 0x7) return f32_from_bits(sign | 0x7FC00000u);
  if (e == 0) {
    const float v = float(m) * (1.0f / 512.0f);  // subnormal: m * 2^-9
    return sign ? -v : v;
  }
  return f32_from_bits(sign | ((e + 120u) << 23) | (m << 20));
}

// NaN -> 0, |x| > 2^127 (infinities too) -> +-2^127, so that scale * 448 stays finite.
MLRA_HD inline float fp8_sanitize(float x) {
  const uint32_t u = f32_bits(x), a = u & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return 0.0f;
  if (a > 0x7F000000u) return f32_from_bits((u & 0x80000000u) | 0x7F000000u);
  return x;
}

// |x| of a sanitized value, for the group's amax (max is exact, so any order gives the same).
MLRA_HD inline float fp8_abs(float x) {
  return f32_from_bits(f32_bits(fp8_sanitize(x)) & 0x7FFFFFFFu);
}

// The group's scale from its amax (a max of fp8_abs values).
MLRA_HD inline float fp8_group_scale(float amax) {
#ifdef __CUDA_ARCH__
  return __fdiv_rn(amax, kFp8E4M3Max);
#else
  return amax / kFp8E4M3Max;
#endif
}

// The code of value x in a group of scale `scale` (0: the group is all zeros).
MLRA_HD inline uint8_t fp8_quantize(float x, float scale) {
  if (scale == 0.0f) return 0;
#ifdef __CUDA_ARCH__
  return fp8_e4m3_encode(__fdiv_rn(fp8_sanitize(x), scale));
#else
  return fp8_e4m3_encode(fp8_sanitize(x) / scale);
#endif
}

MLRA_HD inline float fp8_dequantize(uint8_t code, float scale) {
  return fp8_e4m3_decode(code) * scale;
}

// float32 -> bf16 bits, round to nearest even; NaN -> 0x7FFF (what CUDA's conversion gives).
MLRA_HD inline uint16_t bf16_encode(float x) {
  const uint32_t u = f32_bits(x);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return 0x7FFF;
  return uint16_t((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

MLRA_HD inline float bf16_decode(uint16_t b) {
  return f32_from_bits(uint32_t(b) << 16);
}

// Where an FP8 cache row's parts live (see the header comment). Offsets are bytes from the start
// of a page; rows are slots inside the page.
struct Fp8CacheLayout {
  int32_t groups = 0;       // quantized groups per row, one float32 scale each
  int32_t group_width = 0;  // values per group
  int32_t tail = 0;         // values after the groups, stored bf16

  MLRA_HD int64_t quantized() const { return int64_t(groups) * group_width; }
  MLRA_HD int64_t values() const { return quantized() + tail; }
  MLRA_HD int64_t row_bytes() const {
    return quantized() + 4 * int64_t(groups) + 2 * int64_t(tail);
  }
  MLRA_HD int64_t page_bytes(int64_t page_size) const { return page_size * row_bytes(); }
  MLRA_HD int64_t codes_at(int64_t slot) const { return slot * quantized(); }
  MLRA_HD int64_t scales_at(int64_t page_size, int64_t slot) const {
    return page_size * quantized() + slot * 4 * int64_t(groups);
  }
  MLRA_HD int64_t tail_at(int64_t page_size, int64_t slot) const {
    return page_size * (quantized() + 4 * int64_t(groups)) + slot * 2 * int64_t(tail);
  }
};

}  // namespace mlra
