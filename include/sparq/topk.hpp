#pragma once
/// \file topk.hpp
/// Deterministic top-k selection in O(n): the indices of the k largest values, lower index
/// winning exact ties, returned in ascending index order (so a gather walks memory forward).
///
/// Method: map each float to an order-preserving 32-bit key; one histogram pass over the top
/// 11 key bits finds the bucket that holds the k-th largest value; one pass lists every index
/// at or above that bucket (already ascending); the few candidates inside the bucket are
/// ranked by (key desc, index asc) with nth_element, and the list is filtered in place.
/// NaN ranks below -inf (a NaN is never preferred to a number).
///
/// Reads: x once or twice. Allocates: never (scratch from `top_k_scratch_bytes`).

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "dtype.hpp"

namespace sparq {

namespace detail {
inline constexpr int topk_bucket_bits = 11;
inline constexpr std::size_t topk_buckets = std::size_t{1} << topk_bucket_bits;

/// Order-preserving key: a < b (as floats, NaN lowest) => key(a) < key(b).
inline std::uint32_t order_key(float x) noexcept {
  const std::uint32_t u = float_bits(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0;  // NaN below everything
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
inline std::size_t align_up(std::size_t n, std::size_t a) noexcept { return (n + a - 1) / a * a; }
}  // namespace detail

/// Scratch bytes `top_k` needs for n values.
constexpr std::size_t top_k_scratch_bytes(std::size_t n) noexcept {
  return detail::topk_buckets * sizeof(std::uint32_t) + n * sizeof(std::uint64_t) + 64;
}

/// Writes the indices of the min(k, n) largest x[i] to out (ascending) and returns their
/// count. Ties: the lower index wins. `out` must hold n entries (it doubles as the candidate
/// list). `scratch`: top_k_scratch_bytes(n) bytes, any alignment.
inline std::size_t top_k(const float* x, std::size_t n, std::size_t k, std::uint32_t* out,
                         void* scratch) noexcept {
  using detail::order_key;
  if (k >= n) {
    for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<std::uint32_t>(i);
    return n;
  }
  if (k == 0) return 0;
  auto* base = static_cast<unsigned char*>(scratch);
  base += (64 - reinterpret_cast<std::uintptr_t>(base) % 64) % 64;
  auto* hist = reinterpret_cast<std::uint32_t*>(base);
  auto* cand = reinterpret_cast<std::uint64_t*>(base + detail::topk_buckets * 4);
  constexpr int shift = 32 - detail::topk_bucket_bits;

  std::memset(hist, 0, detail::topk_buckets * sizeof(std::uint32_t));
  for (std::size_t i = 0; i < n; ++i) ++hist[order_key(x[i]) >> shift];

  // Bucket b holds the k-th largest: above(b) < k <= above(b) + hist[b].
  std::size_t above = 0, b = detail::topk_buckets;
  while (b-- > 0) {
    if (above + hist[b] >= k) break;
    above += hist[b];
  }
  const std::uint32_t bucket = static_cast<std::uint32_t>(b);
  const std::size_t need = k - above;  // how many to take from the bucket, 1..hist[b]

  // Every index at or above the bucket, ascending (branch-free append).
  std::size_t m = 0;
  for (std::size_t i = 0; i < n; ++i) {
    out[m] = static_cast<std::uint32_t>(i);
    m += (order_key(x[i]) >> shift) >= bucket;
  }
  if (m == k) return k;

  // Rank the bucket's members by (key desc, index asc); the need-th one is the threshold.
  // Packing (key, ~index) into 64 bits makes that one unsigned comparison.
  std::size_t c = 0;
  for (std::size_t j = 0; j < m; ++j) {
    const std::uint32_t key = order_key(x[out[j]]);
    if ((key >> shift) == bucket)
      cand[c++] = (std::uint64_t{key} << 32) | (0xffffffffu - out[j]);
  }
  std::nth_element(cand, cand + (need - 1), cand + c, [](std::uint64_t a, std::uint64_t b2) {
    return a > b2;
  });
  const std::uint64_t threshold = cand[need - 1];

  std::size_t w = 0;
  for (std::size_t j = 0; j < m; ++j) {
    const std::uint32_t i = out[j];
    const std::uint64_t packed = (std::uint64_t{order_key(x[i])} << 32) | (0xffffffffu - i);
    out[w] = i;
    w += packed >= threshold;
  }
  return w;
}

}  // namespace sparq
