#pragma once
/// \file detail/attend_lanes.hpp
/// The attention kernel of the SIMD tiers without AVX-512 (AVX2, SSE2, NEON), written with
/// xsimd (attend_online_lanes): rows go `lanes` at a time (8 on AVX2, 4 on SSE2 and NEON).
/// Each K and V row is widened once per block for all heads of the group (not once per
/// head), a block's partial dot products become one batch of logits per head with
/// xsimd::haddp (no horizontal sum per row and head), and the V pass keeps 8 accumulators
/// in registers over the block's rows. Rows and prefetches as the AVX-512 kernel: fill_rows.
///
/// The order of a head's operations depends only on the block size (a constant), so the
/// result never depends on the thread count.

#include <cmath>
#include <cstddef>
#include <limits>
#include <type_traits>

#include "../traffic.hpp"
#include "attend_rows.hpp"
#include "simd.hpp"

namespace sparq::detail {

#if SPARQ_SIMD

/// Vector accumulators the logits and the V pass keep live (AVX2 and SSE2 have 16 vector
/// registers; the rest hold a widened row and a broadcast weight).
inline constexpr std::size_t lanes_accumulators = 8;
/// How many rows (logits) or row vectors (V pass) a pass over HC heads takes at a time: as
/// many as keep lanes_accumulators accumulators in flight, at most `cap`.
constexpr std::size_t lanes_per_pass(std::size_t hc, std::size_t cap) noexcept {
  return lanes_accumulators / hc < cap ? lanes_accumulators / hc : cap;
}

/// part[h][j] = lane-wise partial products of q_h · K_j, for heads [0, HC) (q: the first
/// head's [D]) and the block's `lanes` rows, R rows at a time so that R * HC accumulators are
/// in flight; each K row is widened once for the HC heads. pk (or nullptr): rows whose lines
/// are prefetched, one row per K row.
template <std::size_t D, class T, std::size_t HC>
inline void logits_lanes(const float* q, const T* const* krows, const char* const* pk,
                         fbatch (*part)[lanes]) noexcept {
  constexpr std::size_t NV = D / lanes;
  constexpr std::size_t R = lanes_per_pass(HC, lanes);
  static_assert(R > 0 && lanes % R == 0, "logits_lanes: rows per pass must divide the block");
  for (std::size_t j0 = 0; j0 < lanes; j0 += R) {
    fbatch a[R][HC];
    SPARQ_UNROLL
    for (std::size_t r = 0; r < R; ++r) {
      SPARQ_UNROLL
      for (std::size_t h = 0; h < HC; ++h) a[r][h] = fbatch(0.0f);
    }
    if (pk) {
      SPARQ_UNROLL
      for (std::size_t r = 0; r < R; ++r) prefetch_lines(pk[j0 + r], D * sizeof(T));
    }
    for (std::size_t c = 0; c < NV; ++c) {
      SPARQ_UNROLL
      for (std::size_t r = 0; r < R; ++r) {
        const fbatch kc = load_widen(krows[j0 + r] + c * lanes);
        SPARQ_UNROLL
        for (std::size_t h = 0; h < HC; ++h)
          a[r][h] = xsimd::fma(fbatch::load_unaligned(q + h * D + c * lanes), kc, a[r][h]);
      }
    }
    SPARQ_UNROLL
    for (std::size_t r = 0; r < R; ++r) {
      SPARQ_UNROLL
      for (std::size_t h = 0; h < HC; ++h) part[h][j0 + r] = a[r][h];
    }
  }
}

/// Online-softmax update of one head's running max m and sum z with a block's logits lg
/// (lanes that are not rows hold -inf): writes the block's weights w[0..lanes) and returns
/// the factor the head's accumulator is rescaled by. A head whose logits are all -inf so far
/// keeps m = -inf, z = 0 and gets zero weights.
inline float softmax_lanes(const fbatch& lg, const xsimd::batch_bool<float, arch>& valid,
                           float& m, float& z, float* w) noexcept {
  const float bm = hmax(lg);
  const float mn = bm > m ? bm : m;
  if (mn == -std::numeric_limits<float>::infinity()) {
    fbatch(0.0f).store_unaligned(w);
    return 1.0f;
  }
  const float c = std::exp(m - mn);  // 0 when the old max was -inf, exactly 1 when it holds
  const fbatch e = xsimd::select(valid, vexp(lg - fbatch(mn)), fbatch(0.0f));
  e.store_unaligned(w);
  z = z * c + hsum(e);
  m = mn;
  return c;
}

/// acc[h] = acc[h] * c[h] + sum_j w[h][j] * V_j for HC heads (acc rows D floats apart, w rows
/// `lanes` floats apart) over the block's nb rows, DC vectors of the row at a time (HC * DC
/// accumulators); each V row is widened once per pass for the HC heads. pv (or nullptr): rows
/// whose lines are prefetched, one row per V row of the first pass.
template <std::size_t D, class T, std::size_t HC>
inline void v_lanes(float* acc, const float* w, const float* c, const T* const* vrows,
                    std::size_t nb, const char* const* pv) noexcept {
  constexpr std::size_t NV = D / lanes;
  constexpr std::size_t DC = lanes_per_pass(HC, NV);
  static_assert(DC > 0 && NV % DC == 0, "v_lanes: vectors per pass must divide the row");
  for (std::size_t i0 = 0; i0 < NV; i0 += DC) {
    fbatch a[HC][DC];
    SPARQ_UNROLL
    for (std::size_t h = 0; h < HC; ++h) {
      const fbatch ch(c[h]);
      SPARQ_UNROLL
      for (std::size_t i = 0; i < DC; ++i)
        a[h][i] = fbatch::load_unaligned(acc + h * D + (i0 + i) * lanes) * ch;
    }
    for (std::size_t j = 0; j < nb; ++j) {
      if (pv && i0 == 0) prefetch_lines(pv[j], D * sizeof(T));
      fbatch vv[DC];
      SPARQ_UNROLL
      for (std::size_t i = 0; i < DC; ++i) vv[i] = load_widen(vrows[j] + (i0 + i) * lanes);
      SPARQ_UNROLL
      for (std::size_t h = 0; h < HC; ++h) {
        const fbatch wj(w[h * lanes + j]);
        SPARQ_UNROLL
        for (std::size_t i = 0; i < DC; ++i) a[h][i] = xsimd::fma(wj, vv[i], a[h][i]);
      }
    }
    SPARQ_UNROLL
    for (std::size_t h = 0; h < HC; ++h) {
      SPARQ_UNROLL
      for (std::size_t i = 0; i < DC; ++i)
        a[h][i].store_unaligned(acc + h * D + (i0 + i) * lanes);
    }
  }
}

/// Calls f(std::integral_constant<std::size_t, HC>{}) with HC = hc (1..4).
template <class F>
inline void with_heads4(std::size_t hc, F&& f) {
  switch (hc) {
    case 1: f(std::integral_constant<std::size_t, 1>{}); break;
    case 2: f(std::integral_constant<std::size_t, 2>{}); break;
    case 3: f(std::integral_constant<std::size_t, 3>{}); break;
    default: f(std::integral_constant<std::size_t, 4>{}); break;
  }
}

/// attend_online for the non-AVX-512 SIMD tiers and a head dim D that is a multiple of
/// `lanes` (64, 128). p: scratch of at least g * (lanes + 1) floats (the block's weights
/// and rescale factors). Heads go 4 at a time through the logits and the V pass.
template <std::size_t D, class T, class KRows, class VRows, class Pos, class Traffic>
void attend_online_lanes(const float* q, std::size_t g, float scale, const KRows& k,
                         const VRows& v, Pos pos, std::size_t n, const online_state& st,
                         float* p, Traffic& traffic) noexcept {
  static_assert(D % lanes == 0, "attend_online_lanes: D must be a multiple of the lanes");
  constexpr bool ahead = !Pos::gathered;
  const hint_steps hs = contiguous_hint_steps<T>(k, v);
  row_block<T, lanes, ahead> blk;
  fbatch part[4][lanes];
  float* const w = p;              // [g][lanes] the block's weights
  float* const cf = p + g * lanes;  // [g] the accumulators' rescale factors
  alignas(64) float iota[lanes];
  for (std::size_t i = 0; i < lanes; ++i) iota[i] = static_cast<float>(i);
  const fbatch lane_index = fbatch::load_aligned(iota);
  const fbatch vscale(scale);
  const fbatch ninf(-std::numeric_limits<float>::infinity());
  if constexpr (Pos::gathered)
    prefetch_gathered<D, T>(k, v, pos, 0, gathered_prefetch_rows < n ? gathered_prefetch_rows : n);
  for (std::size_t b0 = 0; b0 < n; b0 += lanes) {
    fill_rows<D>(blk, k, v, pos, b0, n, hs, traffic);
    const auto valid = lane_index < fbatch(static_cast<float>(blk.nb));
    for (std::size_t h0 = 0; h0 < g; h0 += 4) {
      const std::size_t hc = g - h0 < 4 ? g - h0 : 4;
      const char* const* pk = ahead && h0 == 0 ? blk.kahead : nullptr;  // once per block
      with_heads4(hc, [&](auto HC) {
        logits_lanes<D, T, decltype(HC)::value>(q + h0 * D, blk.krows, pk, part);
      });
      for (std::size_t h = 0; h < hc; ++h) {
        const fbatch lg = xsimd::select(valid, xsimd::haddp(part[h]) * vscale, ninf);
        cf[h0 + h] = softmax_lanes(lg, valid, st.m[h0 + h], st.z[h0 + h], w + (h0 + h) * lanes);
      }
    }
    for (std::size_t h0 = 0; h0 < g; h0 += 4) {
      const std::size_t hc = g - h0 < 4 ? g - h0 : 4;
      const char* const* pv = ahead && h0 == 0 ? blk.vahead : nullptr;  // once per block
      with_heads4(hc, [&](auto HC) {
        v_lanes<D, T, decltype(HC)::value>(st.acc + h0 * D, w + h0 * lanes, cf + h0, blk.vrows,
                                           blk.nb, pv);
      });
    }
  }
}

#endif  // SPARQ_SIMD

}  // namespace sparq::detail
