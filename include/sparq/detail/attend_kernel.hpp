#pragma once
/// \file detail/attend_kernel.hpp
/// Exact attention of a group of g query heads over n K/V rows, with an online softmax over
/// blocks of rows (FlashAttention-style running max and sum, so K and V are each read once;
/// 16 rows in the AVX-512 kernel, `lanes` in the other SIMD kernel, `attend_block` in the
/// generic loop). The rows are either contiguous (dense baseline) or gathered through an index
/// list (SparQ stage 2); each row is read once per group, not once per head.
///
/// Reads: n rows of K and n rows of V. Writes: acc [g][d], m [g], z [g]. Scratch: p
/// [g][attend_block] floats.
/// Allocates: never. Accumulates in fp32. The block size is a constant, so the summation order
/// (and hence the result) never depends on the thread count.
///
/// attend_online picks the kernel: for d = 64 or 128, attend_online_16 (attend_avx512.hpp) on
/// AVX-512 builds and attend_online_lanes (attend_lanes.hpp) on the other SIMD tiers; else
/// (scalar builds, other head dims) the generic loop below, blocks of attend_block rows.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "../dtype.hpp"
#include "../traffic.hpp"
#include "../view.hpp"
#include "attend_avx512.hpp"
#include "attend_lanes.hpp"
#include "attend_rows.hpp"
#include "simd.hpp"

namespace sparq::detail {

inline constexpr std::size_t attend_block = 64;

/// q_h · row over d elements, fp32 accumulation. D is d when known at compile time, else 0.
template <std::size_t D, class T>
inline float dot_row(const float* q, const T* row, std::size_t d) noexcept {
  if constexpr (D != 0) d = D;
  std::size_t c = 0;
  float s = 0.0f;
#if SPARQ_SIMD
  fbatch a0(0.0f), a1(0.0f);
  for (; c + 2 * lanes <= d; c += 2 * lanes) {
    a0 = xsimd::fma(fbatch::load_unaligned(q + c), load_widen(row + c), a0);
    a1 = xsimd::fma(fbatch::load_unaligned(q + c + lanes), load_widen(row + c + lanes), a1);
  }
  for (; c + lanes <= d; c += lanes)
    a0 = xsimd::fma(fbatch::load_unaligned(q + c), load_widen(row + c), a0);
  s = hsum(a0 + a1);
#endif
  for (; c < d; ++c) s += q[c] * to_float(row[c]);
  return s;
}

/// acc[0..d) += sum_j w[j] * rows[j][0..d) for nb rows; fp32.
template <std::size_t D, class T, class RowPtr>
inline void accumulate_rows(float* acc, const float* w, RowPtr rows, std::size_t nb,
                            std::size_t d) noexcept {
  if constexpr (D != 0) d = D;
#if SPARQ_SIMD
  if constexpr (D != 0 && D % lanes == 0 && D / lanes <= 8) {
    // Whole accumulator row in registers; each V row is read front to back.
    constexpr std::size_t nc = D / lanes;
    fbatch a[nc];
    for (std::size_t i = 0; i < nc; ++i) a[i] = fbatch::load_unaligned(acc + i * lanes);
    for (std::size_t j = 0; j < nb; ++j) {
      const T* r = rows(j);
      const fbatch wj(w[j]);
      for (std::size_t i = 0; i < nc; ++i) a[i] = xsimd::fma(wj, load_widen(r + i * lanes), a[i]);
    }
    for (std::size_t i = 0; i < nc; ++i) a[i].store_unaligned(acc + i * lanes);
    (void)d;
  } else
#endif
  {
    std::size_t c = 0;
#if SPARQ_SIMD
    for (; c + lanes <= d; c += lanes) {
      fbatch a = fbatch::load_unaligned(acc + c);
      for (std::size_t j = 0; j < nb; ++j)
        a = xsimd::fma(fbatch(w[j]), load_widen(rows(j) + c), a);
      a.store_unaligned(acc + c);
    }
#endif
    if constexpr (!SPARQ_SIMD || D == 0 || D % lanes != 0) {
      for (; c < d; ++c) {
        float a = acc[c];
        for (std::size_t j = 0; j < nb; ++j) a += w[j] * to_float(rows(j)[c]);
        acc[c] = a;
      }
    }
  }
}

/// Replaces p[0..n) by exp(p - mx) and returns their sum.
inline float exp_shift_sum(float* p, std::size_t n, float mx) noexcept {
  std::size_t j = 0;
  float z = 0.0f;
#if SPARQ_SIMD
  const fbatch mv(mx);
  fbatch zs(0.0f);
  for (; j + lanes <= n; j += lanes) {
    const fbatch e = vexp(fbatch::load_unaligned(p + j) - mv);
    e.store_unaligned(p + j);
    zs += e;
  }
  if (j < n) {  // same vector exp on a padded copy: a value never depends on where it sits
    alignas(64) float t[lanes];
    for (std::size_t i = 0; i < lanes; ++i) t[i] = j + i < n ? p[j + i] : mx;
    vexp(fbatch::load_aligned(t) - mv).store_aligned(t);
    for (std::size_t i = 0; j + i < n; ++i) p[j + i] = t[i];
    z = hsum(zs);
    for (std::size_t i = 0; j + i < n; ++i) z += t[i];
    return z;
  }
  z = hsum(zs);
#endif
  for (; j < n; ++j) {
    p[j] = std::exp(p[j] - mx);
    z += p[j];
  }
  return z;
}

inline float max_of(const float* p, std::size_t n) noexcept {
  float mx = -std::numeric_limits<float>::infinity();
  std::size_t j = 0;
#if SPARQ_SIMD
  fbatch mv(mx);
  for (; j + lanes <= n; j += lanes) mv = vmax(mv, fbatch::load_unaligned(p + j));
  mx = hmax(mv);
#endif
  for (; j < n; ++j) mx = p[j] > mx ? p[j] : mx;
  return mx;
}


/// Folds n rows (positions pos(0..n)) into the online state of g heads.
/// q: [g][d] fp32; p: scratch [g][attend_block]. k, v: a row source with `row(s)`,
/// `element_type`, `row_stride` (elements between a page's consecutive rows, for prefetch
/// hints) and `paged` (rows_view, paged_rows_view): the arithmetic never depends on where a
/// row is.
template <std::size_t D, class KRows, class VRows, class Pos, class Traffic>
void attend_online(const float* q, std::size_t g, std::size_t d, float scale, const KRows& k,
                   const VRows& v, Pos pos, std::size_t n, const online_state& st, float* p,
                   Traffic& traffic) noexcept {
  using T = std::remove_const_t<typename KRows::element_type>;
  static_assert(std::is_same_v<T, std::remove_const_t<typename VRows::element_type>>,
                "attend_online: K and V rows must have the same storage type");
#if SPARQ_ATTEND_AVX512
  if constexpr (D != 0 && D % 16 == 0 && D <= 256) {
    (void)d;
    (void)p;
    attend_online_16<D, T>(q, g, scale, k, v, pos, n, st, traffic);
    return;
  }
#elif SPARQ_SIMD
  static_assert(lanes + 1 <= attend_block, "attend_online_lanes needs g * (lanes + 1) floats of p");
  if constexpr (D != 0 && D % lanes == 0) {
    (void)d;
    attend_online_lanes<D, T>(q, g, scale, k, v, pos, n, st, p, traffic);
    return;
  }
#endif
  if constexpr (D != 0) d = D;
  const std::size_t row_bytes = d * sizeof(T);
  for (std::size_t b0 = 0; b0 < n; b0 += attend_block) {
    const std::size_t nb = n - b0 < attend_block ? n - b0 : attend_block;
    if constexpr (Pos::gathered) {
      // Rows are scattered: ask for this block's V rows and the next block's K rows now, so
      // the loads below find them in flight.
      const std::size_t nn = n - b0 - nb < attend_block ? n - b0 - nb : attend_block;
      for (std::size_t j = 0; j < nb; ++j)
        for (std::size_t o = 0; o < row_bytes; o += 64)
          prefetch(reinterpret_cast<const char*>(v.row(pos(b0 + j))) + o);
      for (std::size_t j = 0; j < nn; ++j)
        for (std::size_t o = 0; o < row_bytes; o += 64)
          prefetch(reinterpret_cast<const char*>(k.row(pos(b0 + nb + j))) + o);
    }
    for (std::size_t j = 0; j < nb; ++j) {
      const T* kr = k.row(pos(b0 + j));
      traffic.read(arena::k, kr, row_bytes);
      for (std::size_t h = 0; h < g; ++h)
        p[h * attend_block + j] = dot_row<D>(q + h * d, kr, d) * scale;
    }
    for (std::size_t h = 0; h < g; ++h) {
      float* ph = p + h * attend_block;
      const float bm = max_of(ph, nb);
      const float mn = bm > st.m[h] ? bm : st.m[h];
      if (mn == -std::numeric_limits<float>::infinity()) {
        // Every logit so far is -inf: no mass yet; keep the state empty.
        for (std::size_t j = 0; j < nb; ++j) ph[j] = 0.0f;
        continue;
      }
      if (mn != st.m[h]) {
        const float c = std::exp(st.m[h] - mn);  // 0 when the old max was -inf
        st.z[h] *= c;
        float* a = st.acc + h * d;
        for (std::size_t i = 0; i < d; ++i) a[i] *= c;
        st.m[h] = mn;
      }
      st.z[h] += exp_shift_sum(ph, nb, mn);
    }
    for (std::size_t j = 0; j < nb; ++j) traffic.read(arena::v, v.row(pos(b0 + j)), row_bytes);
    auto vrow = [&](std::size_t j) { return v.row(pos(b0 + j)); };
    for (std::size_t h = 0; h < g; ++h)
      accumulate_rows<D, T>(st.acc + h * d, p + h * attend_block, vrow, nb, d);
  }
}

/// Calls f(std::integral_constant<std::size_t, D>{}) with D = d for the head dims that have
/// a register-blocked instantiation (64, 128), else D = 0 (runtime d).
template <class F>
decltype(auto) dispatch_head_dim(std::size_t d, F&& f) {
  switch (d) {
    case 64: return f(std::integral_constant<std::size_t, 64>{});
    case 128: return f(std::integral_constant<std::size_t, 128>{});
    default: return f(std::integral_constant<std::size_t, 0>{});
  }
}

}  // namespace sparq::detail
