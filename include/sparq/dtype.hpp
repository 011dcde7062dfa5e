#pragma once
/// \file dtype.hpp
/// Storage types for K/V: `float`, `sparq::f16` (IEEE binary16) and `sparq::bf16` (bfloat16).
///
/// The 2-byte types are plain bit containers: all arithmetic happens in fp32 after widening.
/// Narrowing rounds to nearest, ties to even (what hardware converters and PyTorch do), keeps
/// signed zeros, infinities and NaN (quietened), and produces subnormals where due.

#include <cstdint>
#include <cstring>
#include <type_traits>

namespace sparq {

/// IEEE 754 binary16 storage.
struct f16 {
  std::uint16_t bits;
};
/// bfloat16 storage (the top half of an fp32).
struct bf16 {
  std::uint16_t bits;
};

enum class dtype { f32, f16, bf16 };

template <class T>
struct dtype_of;
template <>
struct dtype_of<float> : std::integral_constant<dtype, dtype::f32> {};
template <>
struct dtype_of<f16> : std::integral_constant<dtype, dtype::f16> {};
template <>
struct dtype_of<bf16> : std::integral_constant<dtype, dtype::bf16> {};

template <class T>
inline constexpr bool is_storage_type_v =
    std::is_same_v<T, float> || std::is_same_v<T, f16> || std::is_same_v<T, bf16>;

constexpr const char* dtype_name(dtype t) noexcept {
  return t == dtype::f32 ? "f32" : t == dtype::f16 ? "f16" : "bf16";
}
constexpr std::size_t dtype_size(dtype t) noexcept { return t == dtype::f32 ? 4 : 2; }

namespace detail {
inline std::uint32_t float_bits(float x) noexcept {
  std::uint32_t u;
  std::memcpy(&u, &x, 4);
  return u;
}
inline float bits_float(std::uint32_t u) noexcept {
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}
}  // namespace detail

inline float to_float(float x) noexcept { return x; }

inline float to_float(bf16 x) noexcept {
  return detail::bits_float(static_cast<std::uint32_t>(x.bits) << 16);
}

inline float to_float(f16 x) noexcept {
  const std::uint32_t h = x.bits;
  const std::uint32_t sign = (h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1fu;
  std::uint32_t mant = h & 0x3ffu;
  if (exp == 0x1f) return detail::bits_float(sign | 0x7f800000u | (mant << 13));  // inf/NaN
  if (exp != 0) return detail::bits_float(sign | ((exp + 112) << 23) | (mant << 13));
  if (mant == 0) return detail::bits_float(sign);  // signed zero
  // Subnormal: value = mant * 2^-24, exact in fp32.
  const float v = static_cast<float>(mant) * 5.9604644775390625e-8f;
  return sign ? -v : v;
}

template <class T>
T from_float(float x) noexcept;

template <>
inline float from_float<float>(float x) noexcept {
  return x;
}

template <>
inline bf16 from_float<bf16>(float x) noexcept {
  std::uint32_t u = detail::float_bits(x);
  if ((u & 0x7fffffffu) > 0x7f800000u)  // NaN: keep sign, force quiet
    return bf16{static_cast<std::uint16_t>((u >> 16) | 0x40u)};
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest, ties to even
  return bf16{static_cast<std::uint16_t>(u >> 16)};
}

template <>
inline f16 from_float<f16>(float x) noexcept {
  const std::uint32_t u = detail::float_bits(x);
  const std::uint32_t sign = (u >> 16) & 0x8000u;
  const std::uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return f16{static_cast<std::uint16_t>(sign | 0x7e00u | ((a >> 13) & 0x3ffu))};
  if (a >= 0x477ff000u) return f16{static_cast<std::uint16_t>(sign | 0x7c00u)};  // rounds to inf
  if (a < 0x38800000u) {
    // Result is subnormal or zero: round a * 2^24 to an integer, ties to even.
    if (a < 0x33000000u) return f16{static_cast<std::uint16_t>(sign)};  // < 2^-25: zero
    const std::uint32_t e = a >> 23;
    const std::uint32_t m = (a & 0x7fffffu) | 0x800000u;
    const std::uint32_t shift = 126 - e;  // 14..24 for e in [102,112]
    std::uint32_t r = m >> shift;
    const std::uint32_t rem = m & ((1u << shift) - 1u);
    const std::uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1u))) ++r;
    return f16{static_cast<std::uint16_t>(sign | r)};
  }
  // Normal: rebias exponent, round mantissa from 23 to 10 bits, ties to even; carry may
  // overflow into the exponent, which is the correct result.
  std::uint32_t r = a - 0x38000000u;
  r += 0xfffu + ((r >> 13) & 1u);
  return f16{static_cast<std::uint16_t>(sign | (r >> 13))};
}

}  // namespace sparq
