#pragma once
/// \file detail/size_math.hpp
/// Size arithmetic that cannot wrap: the workspace planners saturate at SIZE_MAX (they are
/// noexcept; a saturated size then fails the caller's workspace check with a clear message),
/// and the constructors that allocate throw sparq::error naming what is too large.

#include <cstddef>
#include <cstdint>
#include <limits>
#include <sstream>

#include "../error.hpp"

namespace sparq::detail {

inline constexpr std::size_t size_max = std::numeric_limits<std::size_t>::max();
/// The largest object: std::vector and allocators refuse more bytes than this.
inline constexpr std::size_t max_object_bytes =
    static_cast<std::size_t>(std::numeric_limits<std::ptrdiff_t>::max());

/// a * b, or SIZE_MAX when the product does not fit.
constexpr std::size_t sat_mul(std::size_t a, std::size_t b) noexcept {
  return b != 0 && a > size_max / b ? size_max : a * b;
}
/// a + b, or SIZE_MAX when the sum does not fit.
constexpr std::size_t sat_add(std::size_t a, std::size_t b) noexcept {
  return a > size_max - b ? size_max : a + b;
}
/// n rounded up to a multiple of a (a >= 1), or SIZE_MAX when that does not fit.
constexpr std::size_t sat_align(std::size_t n, std::size_t a) noexcept {
  return n > size_max - (a - 1) ? size_max : (n + a - 1) / a * a;
}

/// The product of n... (a byte count: the last factor is usually a sizeof), or throws
/// sparq::error "<what> = <n x ...> bytes: more than the largest object (PTRDIFF_MAX)".
template <class... N>
std::size_t checked_product(const char* what, N... n) {
  const std::size_t f[] = {static_cast<std::size_t>(n)...};
  std::size_t p = 1;
  bool over = false;
  for (const std::size_t x : f) {
    over = over || (x != 0 && p > max_object_bytes / x);
    p = over ? 0 : p * x;
  }
  if (over) {
    std::ostringstream os;
    for (std::size_t i = 0; i < sizeof...(N); ++i) os << (i ? " x " : "") << f[i];
    fail(what, " = ", os.str(), " bytes: more than the largest object (PTRDIFF_MAX)");
  }
  return p;
}

}  // namespace sparq::detail
