// The FP8 E4M3 encoding (kernels/fp8_e4m3.h) against a float64 reference written from the OCP
// definition: every code's value, round-to-nearest-even at and around every rounding boundary,
// saturation, and groups of values spanning the whole range (outliers, subnormal f32 and E4M3
// values, all-zero rows, infinities and NaNs in the input) never give a NaN code or a non-finite
// scale, and dequantize within half an E4M3 step of the value.
#include <catch2/catch.hpp>

#include <cfloat>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "kernels/fp8_e4m3.h"

using namespace mlra;

namespace {

// OCP E4M3 value of a code, from the definition (bias 7, subnormals m * 2^-9, 0x7F/0xFF NaN).
double reference_value(int code) {
  const int sign = code >> 7, e = (code >> 3) & 0xF, m = code & 7;
  const double mag = e == 0 ? std::ldexp(m, -9) : std::ldexp(1.0 + m / 8.0, e - 7);
  return sign ? -mag : mag;
}

// Round to nearest finite E4M3 value, ties to the even code (mantissa bit 0 clear), by search.
int reference_encode(double y) {
  if (std::isnan(y)) return 0;
  const int sign = std::signbit(y) ? 0x80 : 0;
  const double a = std::fabs(y);
  int best = 0;
  for (int c = 1; c <= 0x7E; ++c) {
    const double d = std::fabs(a - reference_value(c)), db = std::fabs(a - reference_value(best));
    if (d < db || (d == db && (c & 1) == 0)) best = c;
  }
  return sign | best;
}

// Half the E4M3 spacing around magnitude a (a <= 448): the largest rounding error at a.
double half_step(double a) {
  if (a < std::ldexp(1.0, -6)) return std::ldexp(1.0, -10);
  return std::ldexp(1.0, int(std::floor(std::log2(a))) - 4);
}

}  // namespace

TEST_CASE("fp8 e4m3 codes decode to the OCP values", "[fp8]") {
  for (int c = 0; c < 256; ++c) {
    INFO("code " << c);
    if ((c & 0x7F) == 0x7F) {
      CHECK(std::isnan(fp8_e4m3_decode(uint8_t(c))));
      continue;
    }
    CHECK(double(fp8_e4m3_decode(uint8_t(c))) == reference_value(c));
    CHECK(int(fp8_e4m3_encode(fp8_e4m3_decode(uint8_t(c)))) == c);  // every value is its own code
  }
  CHECK(fp8_e4m3_decode(0x7E) == kFp8E4M3Max);
  CHECK(fp8_e4m3_decode(0x01) == std::ldexp(1.0f, -9));
}

TEST_CASE("fp8 e4m3 encoding rounds to nearest even at every boundary and saturates", "[fp8]") {
  // Each midpoint between neighbouring values, one float32 ulp either side, and the values.
  std::vector<float> probes;
  for (int c = 0; c < 0x7E; ++c) {
    const float lo = float(reference_value(c)), hi = float(reference_value(c + 1));
    const float mid = float((double(lo) + double(hi)) / 2);  // exact in float32
    for (float x : {lo, mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1e9f), hi})
      for (float s : {1.0f, -1.0f}) probes.push_back(s * x);
  }
  for (float x :
       {448.0f, 449.0f, 464.0f, 479.9f, 480.0f, 1e6f, FLT_MAX, 1e-20f, 1e-40f, 1e-45f, 0.0f, -0.0f})
    for (float s : {1.0f, -1.0f}) probes.push_back(s * x);
  std::mt19937 rng(5);
  std::uniform_real_distribution<double> exponent(-24.0, 10.0);
  for (int i = 0; i < 200000; ++i)
    probes.push_back(float((rng() & 1 ? -1 : 1) * std::exp2(exponent(rng))));
  for (float x : probes) {
    INFO("x = " << x);
    REQUIRE(int(fp8_e4m3_encode(x)) == reference_encode(x));
  }
  CHECK(fp8_e4m3_encode(std::numeric_limits<float>::infinity()) == 0x7E);
  CHECK(fp8_e4m3_encode(-std::numeric_limits<float>::infinity()) == 0xFE);
  CHECK(fp8_e4m3_encode(std::numeric_limits<float>::quiet_NaN()) == 0);
}

TEST_CASE("fp8 groups dequantize within half a step and never hold a NaN", "[fp8]") {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<std::vector<float>> groups;
  for (float magnitude : {1e-38f, 1e-20f, 1e-3f, 1.0f, 300.0f, 1e20f, 3e38f}) {
    std::vector<float> g(64);
    for (auto& v : g) v = normal(rng) * magnitude;
    groups.push_back(g);
    g[17] = 1e4f * magnitude;  // one outlier: the rest lands in E4M3's subnormal range
    groups.push_back(g);
  }
  groups.push_back(std::vector<float>(64, 0.0f));       // all zeros
  groups.push_back({1e-45f, -1e-45f, 2e-45f, 0.0f});    // float32 subnormals
  groups.push_back({1e-43f, 5e-44f, -1e-43f, 3e-44f});  // amax / 448 underflows
  groups.push_back({1.0f, -2.0f, 1e-6f, 3e-3f, 1.9e-3f, 448.0f, -447.0f});
  groups.push_back({inf, 1.0f, -3.0f, nan, -inf, 0.5f});  // non-finite inputs
  groups.push_back({nan, nan, nan});
  for (size_t gi = 0; gi < groups.size(); ++gi) {
    const auto& g = groups[gi];
    INFO("group " << gi);
    float amax = 0.0f;
    for (float v : g) amax = std::max(amax, fp8_abs(v));
    const float scale = fp8_group_scale(amax);
    REQUIRE(std::isfinite(scale));
    REQUIRE(scale >= 0.0f);
    for (float v : g) {
      const uint8_t code = fp8_quantize(v, scale);
      INFO("v = " << v << " scale = " << scale << " code = " << int(code));
      REQUIRE((code & 0x7F) != 0x7F);  // no NaN code, ever
      const double x = fp8_sanitize(v), back = fp8_dequantize(code, scale);
      REQUIRE(std::isfinite(back));
      if (scale == 0.0f) {
        CHECK(code == 0);
        CHECK(std::fabs(x) < 1e-42);
        continue;
      }
      // Half a step of the scaled value, plus float32 rounding of the division and the scale.
      const double y = std::fabs(x) / scale;
      CHECK(std::fabs(back - x) <= (half_step(std::min(y, 448.0)) + 1e-6 * y) * scale * 1.000001);
    }
    if (amax > 0 && scale > 0) {  // the largest magnitude maps to +-448 exactly
      for (float v : g)
        if (fp8_abs(v) == amax) CHECK(std::fabs(fp8_e4m3_decode(fp8_quantize(v, scale))) == 448.0f);
    }
  }
}

TEST_CASE("bf16 encoding rounds to nearest even", "[fp8]") {
  std::mt19937 rng(3);
  for (int i = 0; i < 100000; ++i) {
    const uint32_t bits = rng();
    const float x = f32_from_bits(bits);
    if (std::isnan(x)) {
      CHECK(bf16_encode(x) == 0x7FFF);
      continue;
    }
    if (std::isinf(x)) continue;
    // Reference: the nearer of the two bf16 neighbours (truncation and truncation + 1 ulp).
    const uint16_t lo = uint16_t(bits >> 16), hi = uint16_t(lo + 1);
    const double dl = std::fabs(double(x) - bf16_decode(lo));
    const double dh = std::isinf(bf16_decode(hi)) && !std::isinf(x)
                          ? std::fabs(double(x) - std::ldexp(1.0, 128) * (x < 0 ? -1 : 1))
                          : std::fabs(double(x) - bf16_decode(hi));
    const uint16_t want = dl < dh || (dl == dh && (lo & 1) == 0) ? lo : hi;
    INFO("bits " << bits);
    CHECK(bf16_encode(x) == want);
  }
}
