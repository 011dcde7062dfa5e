#pragma once
/// \file detail/attend_rows.hpp
/// What every attention kernel shares: where its rows are (contiguous or through an index
/// list), the online-softmax state it folds them into, and how contiguous rows are
/// prefetched (the distances, also replayed by the benchmarks' pattern read of a dense step),
/// and fill_rows, which gathers a block's row pointers, counts their bytes and issues every
/// prefetch a block makes.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>

#include "../traffic.hpp"
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

/// The blocked kernels' prefetching of contiguous rows (also replayed by the benchmarks'
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

/// Gathered rows: every line of the K and V rows this many positions ahead, a block at a time.
inline constexpr std::size_t gathered_prefetch_rows = 32;

/// One block of up to B rows as a kernel reads it: the K and V rows (entries nb..B-1 of krows
/// repeat row 0, for kernels that read whole blocks and mask the rest out) and, for
/// contiguous rows (Ahead), the rows contiguous_prefetch_rows ahead whose lines the kernel
/// prefetches one row per row it processes.
template <class T, std::size_t B, bool Ahead>
struct row_block {
  const T* krows[B];
  const T* vrows[B];
  const char* kahead[B];
  const char* vahead[B];
  std::size_t nb;
};

/// Rows between two 4-KiB hints of contiguous rows, for K and for V. Rows further apart than
/// D (a token-major cache, K and V interleaved, ...) still get one hint per 4 KiB of address
/// (1: each row its own page). A hint every 4096 / (D * sizeof(T)) rows skipped pages there
/// (S = 64k, f16, 2 threads, in-process A/B: K|V interleaved 13.0-13.5 -> 10.5-11.6 ms,
/// token-major with 8 heads 15.8-17.0 -> 13.2-13.6 ms; back-to-back rows unchanged).
/// Paged rows: the step is at most a token page, so hints land on pages' first rows when
/// blocks start at multiples of 16 and pages are 2^page_bits tokens (fill_rows).
struct hint_steps {
  std::size_t k, v;
};
template <class T, class KRows, class VRows>
hint_steps contiguous_hint_steps(const KRows& k, const VRows& v) noexcept {
  hint_steps s{contiguous_hint_every(k.row_stride * sizeof(T)),
               contiguous_hint_every(v.row_stride * sizeof(T))};
  if constexpr (KRows::paged) s.k = s.k < k.page_size() ? s.k : k.page_size();
  if constexpr (VRows::paged) s.v = s.v < v.page_size() ? s.v : v.page_size();
  return s;
}

/// Prefetches every line of the K and V rows at positions [j0, j1) (gathered rows).
template <std::size_t D, class T, class KRows, class VRows, class Pos>
inline void prefetch_gathered(const KRows& k, const VRows& v, Pos pos, std::size_t j0,
                              std::size_t j1) noexcept {
  constexpr std::size_t row_bytes = D * sizeof(T);
  for (std::size_t j = j0; j < j1; ++j) {
    const char* kr = reinterpret_cast<const char*>(k.row(pos(j)));
    const char* vr = reinterpret_cast<const char*>(v.row(pos(j)));
    for (std::size_t o = 0; o < row_bytes; o += 64) {
      prefetch(kr + o);
      prefetch(vr + o);
    }
  }
}

/// Fills b with the rows at positions [b0, min(b0 + B, n)), counts their bytes, and issues the
/// block's prefetches: gathered rows, every line of the rows gathered_prefetch_rows ahead
/// (the kernel prefetches the first ones with prefetch_gathered before its first block);
/// contiguous rows, the rows ahead in b.kahead / b.vahead and one line per 4 KiB (hs) of K
/// and of V contiguous_hint_rows ahead.
template <std::size_t D, class T, std::size_t B, bool Ahead, class KRows, class VRows,
          class Pos, class Traffic>
inline void fill_rows(row_block<T, B, Ahead>& b, const KRows& k, const VRows& v, Pos pos,
                      std::size_t b0, std::size_t n, hint_steps hs, Traffic& traffic) noexcept {
  constexpr std::size_t row_bytes = D * sizeof(T);
  const std::size_t nb = n - b0 < B ? n - b0 : B;
  b.nb = nb;
  for (std::size_t j = 0; j < nb; ++j) {
    b.krows[j] = k.row(pos(b0 + j));
    b.vrows[j] = v.row(pos(b0 + j));
    traffic.read(arena::k, b.krows[j], row_bytes);
    traffic.read(arena::v, b.vrows[j], row_bytes);
  }
  for (std::size_t j = nb; j < B; ++j) b.krows[j] = b.krows[0];  // masked out
  if constexpr (Ahead) {
    // Every line of the rows contiguous_prefetch_rows ahead, one row per row processed (the
    // logits prefetch K's, the V pass V's): the arithmetic of a block takes about as long as
    // its rows take to arrive, and the hardware prefetcher alone kept too few lines in flight
    // to overlap them. Spread, not as one burst per block: the burst measured slower than
    // none. Rows past the end: the block's first row (cached; a prefetch must not reach past
    // a view's last row through a block table).
    constexpr std::size_t PD = contiguous_prefetch_rows;
    for (std::size_t j = 0; j < B; ++j) {
      const std::size_t a = b0 + PD + j < n ? b0 + PD + j : b0;
      b.kahead[j] = reinterpret_cast<const char*>(k.row(pos(a)));
      b.vahead[j] = reinterpret_cast<const char*>(v.row(pos(a)));
    }
    // Touch one line per 4 KiB of K and of V, CF rows ahead. The hardware prefetcher stops
    // at page boundaries and the kernels keep too few loads in flight to restart it early;
    // the hint (and its TLB walk) does (measured with the AVX-512 kernel at S = 64k, 2
    // threads: ~53% -> ~73% of the benchmarks' read roof of the time, which lacked such a
    // hint).
    // Blocks of 16 rows (AVX-512) hint their first row and every hs-th after it: one hint
    // per block when hs >= 16, so two per 4 KiB for rows under 256 bytes. Smaller blocks hint
    // only the rows CF ahead whose index is a multiple of hs, one per hs rows (a hint on
    // every 8- or 4-row block would be up to 8 per page).
    constexpr std::size_t CF = contiguous_hint_rows(row_bytes);
    if (b0 + CF + B <= n) {
      if constexpr (B >= 16) {
        for (std::size_t j = 0; j < B; j += hs.k) prefetch(k.row(pos(b0 + CF + j)));
        for (std::size_t j = 0; j < B; j += hs.v) prefetch(v.row(pos(b0 + CF + j)));
      } else {
        const std::size_t a = b0 + CF;
        for (std::size_t j = (hs.k - a % hs.k) % hs.k; j < B; j += hs.k) prefetch(k.row(pos(a + j)));
        for (std::size_t j = (hs.v - a % hs.v) % hs.v; j < B; j += hs.v) prefetch(v.row(pos(a + j)));
      }
    }
  } else {
    constexpr std::size_t PF = gathered_prefetch_rows;
    prefetch_gathered<D, T>(k, v, pos, b0 + PF, b0 + PF + B < n ? b0 + PF + B : n);
  }
}

}  // namespace sparq::detail
