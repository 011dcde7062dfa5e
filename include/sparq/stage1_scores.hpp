#pragma once
/// \file stage1_scores.hpp
/// SparQ stage 1: choose the r query components i1 shared by a KV group, then approximate
/// every position's score from those components of the dimension-major keys Kt, with the
/// coverage temperature, and turn the scores into per-head softmax weights and their group sum.
///
/// Spec (docs/sparq-semantics.md, steps 1-2):
///   a = sum_h |q_h|;  i1 = top-r of a (lower index wins ties)
///   coverage_h = sum_{i in i1} |q_h[i]| / sum_i |q_h[i]|
///   logit_h[s] = (sum_{i in i1} q_h[i] K[s][i]) * scale / sqrt(coverage_h)
///   shat_h = softmax(logit_h);  sel = sum_h shat_h
/// A head whose q is zero on i1 (coverage 0, every logit 0) uses temperature 1: its
/// logits are all zero, so shat_h is uniform either way, and no 0/0 is formed.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>

#include "detail/attend_kernel.hpp"
#include "detail/simd.hpp"
#include "topk.hpp"
#include "traffic.hpp"
#include "paged_view.hpp"
#include "view.hpp"

namespace sparq {

/// Step 1. q: [g][d] fp32. Writes i1 (ascending, r entries) and returns nothing else.
/// Scratch: a: [d] floats; order: [d] uint32; topk_scratch: top_k_scratch_bytes(d) bytes.
inline void choose_components(const float* q, std::size_t g, std::size_t d, std::size_t r,
                              float* a, std::uint32_t* order, void* topk_scratch,
                              std::uint32_t* i1) noexcept {
  for (std::size_t i = 0; i < d; ++i) a[i] = 0.0f;
  for (std::size_t h = 0; h < g; ++h)
    for (std::size_t i = 0; i < d; ++i) a[i] += std::fabs(q[h * d + i]);
  const std::size_t n = top_k(a, d, r, order, topk_scratch);
  for (std::size_t j = 0; j < n; ++j) i1[j] = order[j];
}

/// The per-head multiplier scale / sqrt(coverage_h) and the selected components of q:
/// qs[h][j] = q_h[i1[j]] * scale / sqrt(coverage_h). qs: [g][r].
inline void scaled_query_components(const float* q, std::size_t g, std::size_t d,
                                    const std::uint32_t* i1, std::size_t r, float scale,
                                    float* qs) noexcept {
  for (std::size_t h = 0; h < g; ++h) {
    const float* qh = q + h * d;
    float total = 0.0f, seen = 0.0f;
    for (std::size_t i = 0; i < d; ++i) total += std::fabs(qh[i]);
    for (std::size_t j = 0; j < r; ++j) seen += std::fabs(qh[i1[j]]);
    const float coverage = total > 0.0f ? seen / total : 1.0f;
    const float mult = coverage > 0.0f ? scale / std::sqrt(coverage) : scale;
    for (std::size_t j = 0; j < r; ++j) qs[h * r + j] = qh[i1[j]] * mult;
  }
}

namespace detail {

template <std::size_t HB, class T>
inline void approx_tail(const float* qs, std::size_t r, cols_view<const T> kt,
                        const std::uint32_t* i1, std::size_t s, float* e, std::size_t ld,
                        float* mx) noexcept {
  for (std::size_t h = 0; h < HB; ++h) {
    float acc = 0.0f;
    for (std::size_t j = 0; j < r; ++j) acc += qs[h * r + j] * to_float(kt.dim_row(i1[j])[s]);
    e[h * ld + s] = acc;
    mx[h] = acc > mx[h] ? acc : mx[h];
  }
}

#if SPARQ_SIMD
/// logits for heads [h0, h0+HB) at positions [s, s + NC*lanes). Kt rows are read once per
/// chunk for all HB heads. mv[h]: head h's running lane-wise max (reduced to one float once
/// per range, not per call).
template <std::size_t HB, std::size_t NC, class T>
inline void approx_chunk(const float* qs, std::size_t r, cols_view<const T> kt,
                         const std::uint32_t* i1, std::size_t s, float* e, std::size_t ld,
                         fbatch* mv) noexcept {
  fbatch acc[HB][NC];
  for (std::size_t h = 0; h < HB; ++h)
    for (std::size_t c = 0; c < NC; ++c) acc[h][c] = fbatch(0.0f);
  for (std::size_t j = 0; j < r; ++j) {
    const T* row = kt.dim_row(i1[j]) + s;
    // r concurrent row streams are more than the hardware prefetcher follows well: hint the
    // line 1 KiB ahead in each row (measured ~15% faster at S = 64k; a hint never faults).
    for (std::size_t o = 0; o < NC * lanes * sizeof(T); o += 64)
      prefetch(reinterpret_cast<const char*>(row) + 1024 + o);
    fbatch kv[NC];
    for (std::size_t c = 0; c < NC; ++c) kv[c] = load_widen(row + c * lanes);
    for (std::size_t h = 0; h < HB; ++h) {
      const fbatch qq(qs[h * r + j]);
      for (std::size_t c = 0; c < NC; ++c) acc[h][c] = xsimd::fma(qq, kv[c], acc[h][c]);
    }
  }
  for (std::size_t h = 0; h < HB; ++h) {
    fbatch m = mv[h];
    for (std::size_t c = 0; c < NC; ++c) {
      acc[h][c].store_unaligned(e + h * ld + s + c * lanes);
      m = vmax(m, acc[h][c]);
    }
    mv[h] = m;
  }
}

/// The last n < lanes positions [s, s + n): the same vector arithmetic as approx_chunk on a
/// zero-padded copy, so a position's logit never depends on where it sits (equal keys give
/// bit-equal logits, and exact ties stay exact).
template <std::size_t HB, class T>
inline void approx_tail_vec(const float* qs, std::size_t r, cols_view<const T> kt,
                            const std::uint32_t* i1, std::size_t s, std::size_t n, float* e,
                            std::size_t ld, float* mx) noexcept {
  fbatch acc[HB];
  for (std::size_t h = 0; h < HB; ++h) acc[h] = fbatch(0.0f);
  alignas(64) float tmp[lanes];
  for (std::size_t j = 0; j < r; ++j) {
    const T* row = kt.dim_row(i1[j]) + s;
    for (std::size_t t = 0; t < lanes; ++t) tmp[t] = t < n ? to_float(row[t]) : 0.0f;
    const fbatch kv = fbatch::load_aligned(tmp);
    for (std::size_t h = 0; h < HB; ++h) acc[h] = xsimd::fma(fbatch(qs[h * r + j]), kv, acc[h]);
  }
  for (std::size_t h = 0; h < HB; ++h) {
    acc[h].store_aligned(tmp);
    for (std::size_t t = 0; t < n; ++t) {
      e[h * ld + s + t] = tmp[t];
      mx[h] = tmp[t] > mx[h] ? tmp[t] : mx[h];
    }
  }
}

template <std::size_t NC, class T>
inline void approx_chunk_heads(const float* qs, std::size_t g, std::size_t r,
                               cols_view<const T> kt, const std::uint32_t* i1, std::size_t s,
                               float* e, std::size_t ld, fbatch* mv) noexcept {
  std::size_t h = 0;
  for (; h + 4 <= g; h += 4) approx_chunk<4, NC>(qs + h * r, r, kt, i1, s, e + h * ld, ld, mv + h);
  switch (g - h) {
    case 3: approx_chunk<3, NC>(qs + h * r, r, kt, i1, s, e + h * ld, ld, mv + h); break;
    case 2: approx_chunk<2, NC>(qs + h * r, r, kt, i1, s, e + h * ld, ld, mv + h); break;
    case 1: approx_chunk<1, NC>(qs + h * r, r, kt, i1, s, e + h * ld, ld, mv + h); break;
    default: break;
  }
}
#endif  // SPARQ_SIMD

/// Heads whose running maxima a logits pass keeps as vectors; a larger group is done in
/// passes of this many heads (each pass streams the r Kt rows again).
inline constexpr std::size_t logits_heads_per_pass = 32;

#if SPARQ_SIMD
/// The logits of heads [0, hn) (queries q, [hn][r]) at positions [a, b) of kt into e (head h
/// at e + h*ld), lane-wise maxima into mv[h]; the last b - a < lanes positions (the tails)
/// fold into mx[h] directly. A position's logit is the same arithmetic wherever it sits.
template <class T>
inline void logits_span(const float* q, std::size_t hn, std::size_t r, cols_view<const T> kt,
                        const std::uint32_t* i1, std::size_t a, std::size_t b, float* e,
                        std::size_t ld, fbatch* mv, float* mx) noexcept {
  // 32 registers (AVX-512): 4 vectors per Kt row per step, so each row is read two lines
  // at a time (measured ~15% faster than one line at S = 64k); 16 registers: 2 vectors.
  constexpr std::size_t wide = lanes == 16 ? 4 : 2;
  std::size_t s = a;
  for (; s + wide * lanes <= b; s += wide * lanes)
    approx_chunk_heads<wide>(q, hn, r, kt, i1, s, e, ld, mv);
  for (; s + 2 * lanes <= b; s += 2 * lanes) approx_chunk_heads<2>(q, hn, r, kt, i1, s, e, ld, mv);
  for (; s + lanes <= b; s += lanes) approx_chunk_heads<1>(q, hn, r, kt, i1, s, e, ld, mv);
  if (s < b) {
    std::size_t h = 0;
    for (; h + 4 <= hn; h += 4)
      approx_tail_vec<4>(q + h * r, r, kt, i1, s, b - s, e + h * ld, ld, mx + h);
    for (; h < hn; ++h) approx_tail_vec<1>(q + h * r, r, kt, i1, s, b - s, e + h * ld, ld, mx + h);
  }
}

/// Runs spans(q, hn, h0, mv) for each pass of at most logits_heads_per_pass heads (h0: the
/// pass's first head) with the pass's maxima as vectors, and folds them into mx once per pass
/// (reducing them every step through memory made the loop latency-bound, about 2x slower
/// at S = 64k).
template <class Spans>
inline void logits_passes(const float* qs, std::size_t g, std::size_t r, float* mx,
                          Spans&& spans) noexcept {
  constexpr std::size_t HP = logits_heads_per_pass;
  fbatch mv[HP];
  for (std::size_t h0 = 0; h0 < g; h0 += HP) {
    const std::size_t hn = g - h0 < HP ? g - h0 : HP;
    for (std::size_t h = 0; h < hn; ++h) mv[h] = fbatch(mx[h0 + h]);
    spans(qs + h0 * r, hn, h0, mv);
    for (std::size_t h = 0; h < hn; ++h) {
      const float m = hmax(mv[h]);
      mx[h0 + h] = m > mx[h0 + h] ? m : mx[h0 + h];
    }
  }
}
#endif  // SPARQ_SIMD

/// The logits of g heads at positions [s0, s1) into e, folding them into mx[h]. A position's
/// logit is the same arithmetic whatever range holds it.
template <class T>
void logits_range(const float* qs, std::size_t g, std::size_t r, cols_view<const T> kt,
                  const std::uint32_t* i1, std::size_t s0, std::size_t s1, float* e,
                  std::size_t ld, float* mx) noexcept {
#if SPARQ_SIMD
  logits_passes(qs, g, r, mx, [&](const float* q, std::size_t hn, std::size_t h0, fbatch* mv) {
    logits_span(q, hn, r, kt, i1, s0, s1, e + h0 * ld, ld, mv, mx + h0);
  });
#else
  for (std::size_t s = s0; s < s1; ++s)
    for (std::size_t h = 0; h < g; ++h) approx_tail<1>(qs + h * r, r, kt, i1, s, e + h * ld, ld, mx + h);
#endif
}

/// Calls f(page, first, a, b) for each page holding positions of [s0, s1): page = its columns
/// as a contiguous view, first = its first position, [a, b) = the page-local range.
/// Prefetch: pages sit anywhere in the pool, so before each page the r rows of a page a few
/// pages ahead (about 256 bytes of each row in flight) are requested.
template <bool Prefetch, class T, class F>
void for_each_kt_page(paged_cols_view<const T> kt, std::size_t r, const std::uint32_t* i1,
                      std::size_t s0, std::size_t s1, F&& f) noexcept {
  const std::size_t P = kt.page_size();
  const std::size_t row_bytes = P * sizeof(T);
  const std::size_t ahead = row_bytes >= 256 ? 1 : 256 / row_bytes;
  const std::size_t p_end = (s1 + P - 1) >> kt.page_bits;
  for (std::size_t p = s0 >> kt.page_bits; p < p_end; ++p) {
    if (Prefetch && p + ahead < p_end) {
      const cols_view<const T> next = kt.page(p + ahead);
      for (std::size_t j = 0; j < r; ++j) {
        const char* row = reinterpret_cast<const char*>(next.dim_row(i1[j]));
        for (std::size_t o = 0; o < row_bytes; o += 64) prefetch(row + o);
      }
    }
    const std::size_t first = p << kt.page_bits;
    f(kt.page(p), first, s0 > first ? s0 - first : 0, s1 - first < P ? s1 - first : P);
  }
}

/// logits_range over a paged Kt: the contiguous kernel's spans on each page's columns
/// (page-local positions, e offset by the page's first position), so the logits are
/// bit-identical to those of a contiguous Kt holding the same keys. The running maxima stay
/// vectors across pages (reduced once per pass, not once per page: a 16-column page paid a
/// horizontal max per head every 16 positions). [s0, s1) may span any pages.
template <class T>
void logits_range(const float* qs, std::size_t g, std::size_t r, paged_cols_view<const T> kt,
                  const std::uint32_t* i1, std::size_t s0, std::size_t s1, float* e,
                  std::size_t ld, float* mx) noexcept {
#if SPARQ_SIMD
  logits_passes(qs, g, r, mx, [&](const float* q, std::size_t hn, std::size_t h0, fbatch* mv) {
    for_each_kt_page<true>(kt, r, i1, s0, s1, [&](cols_view<const T> pg, std::size_t first,
                                                  std::size_t a, std::size_t b) {
      logits_span(q, hn, r, pg, i1, a, b, e + h0 * ld + first, ld, mv, mx + h0);
    });
  });
#else
  for_each_kt_page<true>(kt, r, i1, s0, s1, [&](cols_view<const T> pg, std::size_t first,
                                                std::size_t a, std::size_t b) {
    for (std::size_t s = a; s < b; ++s)
      for (std::size_t h = 0; h < g; ++h)
        approx_tail<1>(qs + h * r, r, pg, i1, s, e + first + h * ld, ld, mx + h);
  });
#endif
}

/// sel[s] = sum_h e[h*ld + s] * f[h] for s in [s0, s1) (f[h]: that chunk's factor
/// exp(m_chunk - m) / z for head h). Reads e once; a position's value never depends on the
/// range that holds it.
inline void sel_values(const float* e, std::size_t g, std::size_t ld, const float* f,
                       std::size_t s0, std::size_t s1, float* sel) noexcept {
  std::size_t s = s0;
#if SPARQ_SIMD
  for (; s + lanes <= s1; s += lanes) {
    fbatch acc(0.0f);
    for (std::size_t h = 0; h < g; ++h)
      acc = xsimd::fma(fbatch::load_unaligned(e + h * ld + s), fbatch(f[h]), acc);
    acc.store_unaligned(sel + s);
  }
  if (s < s1) {  // same vector arithmetic on a padded copy
    alignas(64) float te[lanes];
    fbatch acc(0.0f);
    for (std::size_t h = 0; h < g; ++h) {
      for (std::size_t t = 0; t < lanes; ++t) te[t] = s + t < s1 ? e[h * ld + s + t] : 0.0f;
      acc = xsimd::fma(fbatch::load_aligned(te), fbatch(f[h]), acc);
    }
    acc.store_aligned(te);
    for (std::size_t t = 0; s + t < s1; ++t) sel[s + t] = te[t];
    s = s1;
  }
#endif
  for (; s < s1; ++s) {
    float acc = 0.0f;
    for (std::size_t h = 0; h < g; ++h) acc += e[h * ld + s] * f[h];
    sel[s] = acc;
  }
}

/// sel_values over [s0, s1), and hist (topk_buckets entries, overwritten) = the bucket counts
/// of sel[s] for s in [s0, min(s1, rest)). Never allocates.
inline void sel_histogram(const float* e, std::size_t g, std::size_t ld, const float* f,
                          std::size_t s0, std::size_t s1, std::size_t rest, float* sel,
                          std::uint32_t* hist) noexcept {
  sel_values(e, g, ld, f, s0, s1, sel);
  alignas(64) std::uint32_t h2[topk_buckets];
  std::memset(hist, 0, topk_buckets * sizeof(std::uint32_t));
  std::memset(h2, 0, sizeof h2);
  const std::size_t e1 = s1 < rest ? s1 : rest;
  if (e1 > s0) histogram_keys(sel + s0, e1 - s0, hist, h2);
  for (std::size_t b = 0; b < topk_buckets; ++b) hist[b] += h2[b];
}

}  // namespace detail

/// Step 2 (scores part): approximate logits for positions [s0, s1) of g heads.
/// qs: [g][r] from scaled_query_components; e: [g][ld] receives the logits; mx: [g] running
/// maxima (initialise to -inf). Reads r rows of Kt over [s0, s1), once per group.
template <class T, class Traffic = no_traffic>
void approximate_logits(const float* qs, std::size_t g, std::size_t r, cols_view<const T> kt,
                        const std::uint32_t* i1, std::size_t s0, std::size_t s1, float* e,
                        std::size_t ld, float* mx, Traffic& traffic) noexcept {
  if constexpr (Traffic::enabled)
    for (std::size_t j = 0; j < r; ++j)
      traffic.read(arena::kt, kt.dim_row(i1[j]) + s0, (s1 - s0) * sizeof(T));
  detail::logits_range(qs, g, r, kt, i1, s0, s1, e, ld, mx);
}

/// Step 2 (softmax part): e[h][0..S) <- exp(e - mx[h]); z[h] = sum; sel[s] = sum_h e[h][s]/z[h].
/// e, z: unnormalised weights kept for stage 3 (shat_h = e[h] / z[h]).
inline void softmax_group(float* e, std::size_t g, std::size_t S, std::size_t ld, const float* mx,
                          float* z, float* sel) noexcept {
  for (std::size_t h = 0; h < g; ++h) z[h] = detail::exp_shift_sum(e + h * ld, S, mx[h]);
  for (std::size_t s = 0; s < S; ++s) sel[s] = 0.0f;
  for (std::size_t h = 0; h < g; ++h) {
    const float inv = 1.0f / z[h];
    const float* eh = e + h * ld;
    std::size_t s = 0;
#if SPARQ_SIMD
    const detail::fbatch iv(inv);
    for (; s + detail::lanes <= S; s += detail::lanes)
      xsimd::fma(detail::fbatch::load_unaligned(eh + s), iv, detail::fbatch::load_unaligned(sel + s))
          .store_unaligned(sel + s);
    if (s < S) {  // same vector arithmetic on a padded copy: ties stay exact
      alignas(64) float te[detail::lanes], ts[detail::lanes];
      for (std::size_t t = 0; t < detail::lanes; ++t) {
        te[t] = s + t < S ? eh[s + t] : 0.0f;
        ts[t] = s + t < S ? sel[s + t] : 0.0f;
      }
      xsimd::fma(detail::fbatch::load_aligned(te), iv, detail::fbatch::load_aligned(ts))
          .store_aligned(ts);
      for (std::size_t t = 0; s + t < S; ++t) sel[s + t] = ts[t];
      s = S;
    }
#endif
    for (; s < S; ++s) sel[s] += eh[s] * inv;
  }
}

/// approximate_logits over a paged Kt (detail::logits_range's paged form): the logits are
/// bit-identical to those of a contiguous Kt holding the same keys. [s0, s1) may span any
/// pages.
template <class T, class Traffic = no_traffic>
void approximate_logits(const float* qs, std::size_t g, std::size_t r, paged_cols_view<const T> kt,
                        const std::uint32_t* i1, std::size_t s0, std::size_t s1, float* e,
                        std::size_t ld, float* mx, Traffic& traffic) noexcept {
  if constexpr (Traffic::enabled)
    detail::for_each_kt_page<false>(kt, r, i1, s0, s1, [&](cols_view<const T> pg, std::size_t,
                                                           std::size_t a, std::size_t b) {
      for (std::size_t j = 0; j < r; ++j)
        traffic.read(arena::kt, pg.dim_row(i1[j]) + a, (b - a) * sizeof(T));
    });
  detail::logits_range(qs, g, r, kt, i1, s0, s1, e, ld, mx);
}

}  // namespace sparq
