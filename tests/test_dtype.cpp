// Tests for sparq's storage types (dtype.hpp): f16 and bf16 widening and round-to-nearest-even
// narrowing, checked exhaustively over all 65536 bit patterns, at every midpoint between
// neighbouring representable values (where ties-to-even decides), and at the special values
// (signed zeros, infinities, NaN, subnormals, overflow thresholds).

#include "test_util.hpp"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

namespace {

using sparq::bf16;
using sparq::f16;
using sparq::from_float;
using sparq::to_float;

float bits_to_float(std::uint32_t u) {
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}
std::uint32_t float_to_bits(float x) {
  std::uint32_t u;
  std::memcpy(&u, &x, 4);
  return u;
}

/// IEEE binary16 decoded from its definition, in double (independent of sparq's decoder).
double f16_value(std::uint16_t h) {
  const int sign = h >> 15, e = (h >> 10) & 0x1f, m = h & 0x3ff;
  double v;
  if (e == 0x1f) v = m ? std::numeric_limits<double>::quiet_NaN() : std::numeric_limits<double>::infinity();
  else if (e == 0) v = std::ldexp(double(m), -24);
  else v = std::ldexp(double(1024 + m), e - 25);
  return sign ? -v : v;
}

/// bfloat16 decoded from its definition: sign, 8-bit exponent (bias 127), 7-bit mantissa.
double bf16_value(std::uint16_t b) {
  const int sign = b >> 15, e = (b >> 7) & 0xff, m = b & 0x7f;
  double v;
  if (e == 0xff) v = m ? std::numeric_limits<double>::quiet_NaN() : std::numeric_limits<double>::infinity();
  else if (e == 0) v = std::ldexp(double(m), -133);
  else v = std::ldexp(double(128 + m), e - 134);
  return sign ? -v : v;
}

TEST(dtype, f16_widening_matches_the_definition_for_every_bit_pattern) {
  for (std::uint32_t h = 0; h < 65536; ++h) {
    const double want = f16_value(static_cast<std::uint16_t>(h));
    const float got = to_float(f16{static_cast<std::uint16_t>(h)});
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(got)) << std::hex << h;
    } else {
      EXPECT_EQ(double(got), want) << std::hex << h;
      EXPECT_EQ(std::signbit(got), bool(h & 0x8000)) << std::hex << h;  // signed zeros
    }
  }
}

TEST(dtype, bf16_widening_matches_the_definition_for_every_bit_pattern) {
  for (std::uint32_t b = 0; b < 65536; ++b) {
    const double want = bf16_value(static_cast<std::uint16_t>(b));
    const float got = to_float(bf16{static_cast<std::uint16_t>(b)});
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(got)) << std::hex << b;
    } else {
      EXPECT_EQ(double(got), want) << std::hex << b;
      EXPECT_EQ(std::signbit(got), bool(b & 0x8000)) << std::hex << b;
    }
  }
}

// Every non-NaN pattern survives widen -> narrow unchanged; NaN stays NaN with its sign.
template <class H>
void round_trip_all(double (*value)(std::uint16_t)) {
  for (std::uint32_t b = 0; b < 65536; ++b) {
    const H x{static_cast<std::uint16_t>(b)};
    const H y = from_float<H>(to_float(x));
    if (std::isnan(value(x.bits))) {
      EXPECT_TRUE(std::isnan(value(y.bits))) << std::hex << b;
      EXPECT_EQ(y.bits & 0x8000, b & 0x8000) << std::hex << b;
    } else {
      EXPECT_EQ(y.bits, b) << std::hex << b;
    }
  }
}
TEST(dtype, f16_round_trips_every_bit_pattern) { round_trip_all<f16>(f16_value); }
TEST(dtype, bf16_round_trips_every_bit_pattern) { round_trip_all<bf16>(bf16_value); }

// Between each pair of neighbouring finite values a < b (same sign) the exact midpoint must go
// to the one with the even mantissa, and one float ulp either side of it to the nearer one.
// The midpoint is exact in fp32 (11 or 8 significant bits + 1 fit in 24). The pair (max finite,
// +inf) is included: its "midpoint" is the overflow threshold, which rounds to inf (even).
template <class H>
void midpoints(std::uint16_t inf_bits, double (*value)(std::uint16_t)) {
  for (std::uint16_t sign : {std::uint16_t{0}, std::uint16_t{0x8000}}) {
    for (std::uint32_t a = 0; a < inf_bits; ++a) {
      const std::uint16_t lo = static_cast<std::uint16_t>(sign | a), hi = static_cast<std::uint16_t>(sign | (a + 1));
      // The value one step past max finite, had the exponent range continued.
      const double vhi = (a + 1 == inf_bits) ? 2 * value(static_cast<std::uint16_t>(sign | a)) - value(static_cast<std::uint16_t>(sign | (a - 1)))
                                             : value(hi);
      const double mid = (value(lo) + vhi) / 2;
      const float fm = static_cast<float>(mid);
      ASSERT_EQ(double(fm), mid) << "midpoint not exact in fp32 at " << std::hex << a;
      const std::uint16_t even = (lo & 1) == 0 ? lo : hi;
      EXPECT_EQ(from_float<H>(fm).bits, even) << "tie at " << std::hex << lo;
      const float toward_lo = std::nextafter(fm, sign ? std::numeric_limits<float>::infinity() : -std::numeric_limits<float>::infinity());
      const float toward_hi = std::nextafter(fm, sign ? -std::numeric_limits<float>::infinity() : std::numeric_limits<float>::infinity());
      EXPECT_EQ(from_float<H>(toward_lo).bits, lo) << "below midpoint at " << std::hex << lo;
      EXPECT_EQ(from_float<H>(toward_hi).bits, hi) << "above midpoint at " << std::hex << lo;
    }
  }
}
TEST(dtype, f16_narrowing_rounds_to_nearest_even_at_every_midpoint) { midpoints<f16>(0x7c00, f16_value); }
TEST(dtype, bf16_narrowing_rounds_to_nearest_even_at_every_midpoint) { midpoints<bf16>(0x7f80, bf16_value); }

TEST(dtype, f16_special_values) {
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(from_float<f16>(0.0f).bits, 0x0000);
  EXPECT_EQ(from_float<f16>(-0.0f).bits, 0x8000);
  EXPECT_EQ(from_float<f16>(inf).bits, 0x7c00);
  EXPECT_EQ(from_float<f16>(-inf).bits, 0xfc00);
  EXPECT_EQ(from_float<f16>(1.0f).bits, 0x3c00);
  EXPECT_EQ(from_float<f16>(65504.0f).bits, 0x7bff);                      // max finite
  EXPECT_EQ(from_float<f16>(65519.996f).bits, 0x7bff);                    // just below threshold
  EXPECT_EQ(from_float<f16>(65520.0f).bits, 0x7c00);                      // threshold: tie to inf
  EXPECT_EQ(from_float<f16>(1e10f).bits, 0x7c00);
  EXPECT_EQ(from_float<f16>(std::numeric_limits<float>::max()).bits, 0x7c00);
  EXPECT_EQ(from_float<f16>(-1e10f).bits, 0xfc00);
  EXPECT_EQ(from_float<f16>(std::ldexp(1.0f, -24)).bits, 0x0001);         // min subnormal
  EXPECT_EQ(from_float<f16>(std::ldexp(1.0f, -25)).bits, 0x0000);         // half of it: tie to 0
  EXPECT_EQ(from_float<f16>(std::nextafter(std::ldexp(1.0f, -25), 1.0f)).bits, 0x0001);
  EXPECT_EQ(from_float<f16>(std::ldexp(1.5f, -24)).bits, 0x0002);         // 1.5 ulp: tie to even
  EXPECT_EQ(from_float<f16>(std::ldexp(1.0f, -14)).bits, 0x0400);         // min normal
  EXPECT_EQ(from_float<f16>(std::numeric_limits<float>::denorm_min()).bits, 0x0000);
  EXPECT_EQ(from_float<f16>(-std::numeric_limits<float>::denorm_min()).bits, 0x8000);
  for (std::uint32_t payload : {0x7fc00000u, 0x7f800001u, 0xffc00000u, 0x7fbfffffu, 0xff800001u}) {
    const f16 h = from_float<f16>(bits_to_float(payload));
    EXPECT_TRUE(std::isnan(to_float(h))) << std::hex << payload;
    EXPECT_EQ(h.bits & 0x8000u, (payload >> 16) & 0x8000u) << std::hex << payload;
    EXPECT_TRUE(h.bits & 0x0200u) << "NaN must come out quiet: " << std::hex << payload;
  }
}

TEST(dtype, bf16_special_values) {
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(from_float<bf16>(0.0f).bits, 0x0000);
  EXPECT_EQ(from_float<bf16>(-0.0f).bits, 0x8000);
  EXPECT_EQ(from_float<bf16>(inf).bits, 0x7f80);
  EXPECT_EQ(from_float<bf16>(-inf).bits, 0xff80);
  EXPECT_EQ(from_float<bf16>(1.0f).bits, 0x3f80);
  EXPECT_EQ(from_float<bf16>(std::numeric_limits<float>::max()).bits, 0x7f80);  // rounds up to inf
  EXPECT_EQ(from_float<bf16>(std::numeric_limits<float>::denorm_min()).bits, 0x0000);
  EXPECT_EQ(from_float<bf16>(bits_to_float(0x00008000u)).bits, 0x0000);  // subnormal tie to even
  EXPECT_EQ(from_float<bf16>(bits_to_float(0x00018000u)).bits, 0x0002);  // subnormal tie to even
  EXPECT_EQ(from_float<bf16>(bits_to_float(0x00008001u)).bits, 0x0001);
  for (std::uint32_t payload : {0x7fc00000u, 0x7f800001u, 0xffc00000u, 0x7fbfffffu, 0xff800001u}) {
    const bf16 b = from_float<bf16>(bits_to_float(payload));
    EXPECT_TRUE(std::isnan(to_float(b))) << std::hex << payload;
    EXPECT_EQ(b.bits & 0x8000u, (payload >> 16) & 0x8000u) << std::hex << payload;
    EXPECT_TRUE(b.bits & 0x0040u) << "NaN must come out quiet: " << std::hex << payload;
  }
}

// A sweep over many random fp32 values: the result is one of the two neighbours and the nearer
// one (ties excluded by construction above), checked against double arithmetic.
template <class H>
void random_nearest(double (*value)(std::uint16_t), float max_abs) {
  sparq_test::rng r(42);
  for (int n = 0; n < 200000; ++n) {
    const float mag = std::ldexp(1.0f, static_cast<int>(r.index(60)) - 40);
    const float x = r.uniform(-1.0f, 1.0f) * mag;
    if (std::fabs(x) > max_abs) continue;
    const double got = value(from_float<H>(x).bits);
    // No representable value lies strictly closer to x than got does.
    const std::uint16_t b = from_float<H>(x).bits;
    for (int delta : {-1, 1}) {
      const std::uint16_t nb = static_cast<std::uint16_t>(b + delta);
      const double other = value(nb);
      if (std::isnan(other) || std::isinf(other) || std::signbit(other) != std::signbit(got)) continue;
      ASSERT_LE(std::fabs(got - x), std::fabs(other - x)) << x;
    }
  }
}
TEST(dtype, f16_narrowing_picks_the_nearest_value) { random_nearest<f16>(f16_value, 65504.0f); }
TEST(dtype, bf16_narrowing_picks_the_nearest_value) { random_nearest<bf16>(bf16_value, 1e30f); }

TEST(dtype, names_and_sizes) {
  EXPECT_STREQ(sparq::dtype_name(sparq::dtype::f32), "f32");
  EXPECT_STREQ(sparq::dtype_name(sparq::dtype::f16), "f16");
  EXPECT_STREQ(sparq::dtype_name(sparq::dtype::bf16), "bf16");
  EXPECT_EQ(sparq::dtype_size(sparq::dtype::f32), 4u);
  EXPECT_EQ(sparq::dtype_size(sparq::dtype::f16), 2u);
  EXPECT_EQ(sparq::dtype_size(sparq::dtype::bf16), 2u);
  EXPECT_EQ(sizeof(f16), 2u);
  EXPECT_EQ(sizeof(bf16), 2u);
  EXPECT_EQ(to_float(3.25f), 3.25f);
  EXPECT_EQ(float_to_bits(from_float<float>(-0.0f)), 0x80000000u);
}

}  // namespace
