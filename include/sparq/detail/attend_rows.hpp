#pragma once
/// \file detail/attend_rows.hpp
/// What every attention kernel shares: where its rows are (contiguous or through an index
/// list), the online-softmax state it folds them into, and how contiguous rows are
/// prefetched (the distances, also replayed by the benchmarks' pattern read of a dense step).

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>

#include "simd.hpp"

namespace sparq::detail {

/// Row positions 0..n-1 (contiguous, dense).
struct contiguous_positions {
  static constexpr bool gathered = false;
  std::size_t base = 0;
  std::size_t operator()(std::size_t j) const noexcept { return base + j; }
};
/// Row positions from a caller's index list (gathered, SparQ stage 2).
struct indexed_positions {
  static constexpr bool gathered = true;
  const std::uint32_t* index = nullptr;
  std::size_t operator()(std::size_t j) const noexcept { return index[j]; }
};

/// Running state of an online softmax for g heads.
struct online_state {
  float* acc;  ///< [g][d] unnormalised output
  float* m;    ///< [g] running max of the logits
  float* z;    ///< [g] running sum of exp(logit - m)
};

inline void online_init(const online_state& st, std::size_t g, std::size_t d) noexcept {
  for (std::size_t h = 0; h < g; ++h) {
    st.m[h] = -std::numeric_limits<float>::infinity();
    st.z[h] = 0.0f;
  }
  for (std::size_t i = 0; i < g * d; ++i) st.acc[i] = 0.0f;
}

/// out[h] = acc[h] / z[h]; lse[h] = m[h] + log z[h] (natural log) when lse is given.
inline void online_finish(const online_state& st, std::size_t g, std::size_t d, float* out,
                          float* lse) noexcept {
  for (std::size_t h = 0; h < g; ++h) {
    const float inv = st.z[h] > 0.0f ? 1.0f / st.z[h] : 0.0f;
    for (std::size_t i = 0; i < d; ++i) out[h * d + i] = st.acc[h * d + i] * inv;
    if (lse) lse[h] = st.m[h] + std::log(st.z[h]);
  }
}

/// Prefetches every 64-byte line of [p, p + bytes) (p 64-byte aligned; otherwise the last
/// partial line is left out).
inline void prefetch_lines(const void* p, std::size_t bytes) noexcept {
  for (std::size_t o = 0; o < bytes; o += 64) prefetch(static_cast<const char*>(p) + o);
}

/// The AVX-512 kernel's prefetching of contiguous rows (also replayed by the benchmarks'
/// pattern read of a dense step): every line of the rows this many rows ahead, one row per
/// row processed, and one line per 4 KiB of address contiguous_hint_rows ahead.
inline constexpr std::size_t contiguous_prefetch_rows = 16;
/// ~32 KiB of rows of row_bytes, rounded up to a multiple of 16 rows (measured a few % better
/// than 8 or 16 KiB and than 64 KiB at S = 64k).
constexpr std::size_t contiguous_hint_rows(std::size_t row_bytes) noexcept {
  return (32768 / row_bytes + 15) / 16 * 16;
}
/// The hint goes to every this-many-th row of rows stride_bytes apart: one per 4 KiB of
/// address (1 when each row is a page or more apart).
constexpr std::size_t contiguous_hint_every(std::size_t stride_bytes) noexcept {
  return stride_bytes > 0 && stride_bytes < 4096 ? 4096 / stride_bytes : 1;
}

}  // namespace sparq::detail
