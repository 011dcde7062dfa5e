#pragma once
/// \file detail/attend_avx512.hpp
/// The AVX-512 attention kernel (attend_online_16): 16 rows at a time, logits of up to 4
/// heads per pass reduced with a transpose tree, the online-softmax update vectorised across
/// heads, the V pass register-blocked, blocks software-pipelined. Defines SPARQ_ATTEND_AVX512
/// to 1 when the build targets AVX-512 (F + BW), else to 0 and nothing else.

#include <cstddef>
#include <limits>
#include <type_traits>

#include "../traffic.hpp"
#include "attend_rows.hpp"
#include "simd.hpp"

namespace sparq::detail {

#if SPARQ_SIMD && defined(__AVX512F__) && defined(__AVX512BW__)
#define SPARQ_ATTEND_AVX512 1

/// r[j] = sum of the 16 lanes of a[j], for j = 0..15 (a transpose-and-add tree: 45 shuffles
/// and adds for 16 sums instead of 16 separate horizontal reductions).
inline __m512 reduce16(const __m512* a) noexcept {
  __m512 b[8], c[4];
  for (int i = 0; i < 8; ++i)
    b[i] = _mm512_add_ps(_mm512_maskz_unpacklo_ps(k16, a[2 * i], a[2 * i + 1]),
                         _mm512_maskz_unpackhi_ps(k16, a[2 * i], a[2 * i + 1]));
  for (int i = 0; i < 4; ++i)
    c[i] = _mm512_add_ps(
        _mm512_maskz_shuffle_ps(k16, b[2 * i], b[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
        _mm512_maskz_shuffle_ps(k16, b[2 * i], b[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  const __m512 d0 =
      _mm512_add_ps(_mm512_maskz_shuffle_f32x4(k16, c[0], c[1], _MM_SHUFFLE(2, 0, 2, 0)),
                    _mm512_maskz_shuffle_f32x4(k16, c[0], c[1], _MM_SHUFFLE(3, 1, 3, 1)));
  const __m512 d1 =
      _mm512_add_ps(_mm512_maskz_shuffle_f32x4(k16, c[2], c[3], _MM_SHUFFLE(2, 0, 2, 0)),
                    _mm512_maskz_shuffle_f32x4(k16, c[2], c[3], _MM_SHUFFLE(3, 1, 3, 1)));
  return _mm512_add_ps(_mm512_maskz_shuffle_f32x4(k16, d0, d1, _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_maskz_shuffle_f32x4(k16, d0, d1, _MM_SHUFFLE(3, 1, 3, 1)));
}

template <class T>
inline __m512 widen16(const T* p) noexcept {
  return load_widen(p);
}

/// acc[h] = acc[h] * c[h] + sum_j w[h][j] * V_j for HC heads (acc rows ld floats apart; w rows
/// 16 floats apart), nb <= 16 rows; DC vectors of the row at a time (HC * DC accumulators).
/// pv (or nullptr): 16 rows whose lines are prefetched, one row per V row of the first pass.
template <std::size_t HC, std::size_t NV, std::size_t DC, class T>
inline void v_pass(float* acc, std::size_t ld, const float (*w)[16], const float* c,
                   const T* const* vrows, std::size_t nb, const char* const* pv) noexcept {
  for (std::size_t i0 = 0; i0 < NV; i0 += DC) {
    __m512 a[HC][DC];
    SPARQ_UNROLL
    for (std::size_t h = 0; h < HC; ++h) {
      const __m512 cv = _mm512_set1_ps(c[h]);
      SPARQ_UNROLL
      for (std::size_t i = 0; i < DC; ++i)
        if (i0 + i < NV) a[h][i] = _mm512_mul_ps(_mm512_loadu_ps(acc + h * ld + 16 * (i0 + i)), cv);
    }
    for (std::size_t j = 0; j < nb; ++j) {
      if (pv && i0 == 0) prefetch_lines(pv[j], NV * 16 * sizeof(T));
      __m512 vv[DC];
      SPARQ_UNROLL
      for (std::size_t i = 0; i < DC; ++i)
        if (i0 + i < NV) vv[i] = widen16(vrows[j] + 16 * (i0 + i));
      SPARQ_UNROLL
      for (std::size_t h = 0; h < HC; ++h) {
        const __m512 wj = _mm512_set1_ps(w[h][j]);
        SPARQ_UNROLL
        for (std::size_t i = 0; i < DC; ++i)
          if (i0 + i < NV) a[h][i] = _mm512_fmadd_ps(wj, vv[i], a[h][i]);
      }
    }
    SPARQ_UNROLL
    for (std::size_t h = 0; h < HC; ++h) {
      SPARQ_UNROLL
      for (std::size_t i = 0; i < DC; ++i)
        if (i0 + i < NV) _mm512_storeu_ps(acc + h * ld + 16 * (i0 + i), a[h][i]);
    }
  }
}

/// A block of 16 rows (row_block) and, per head, their softmax weights and the accumulator's
/// rescale factor: what the V pass of one block needs.
template <class T, std::size_t HMAX, bool Ahead>
struct block16 : row_block<T, 16, Ahead> {
  alignas(64) float pw[HMAX][16];
  float cf[HMAX];
};

/// The four 16-lane vectors a[0..3] reduced lane-wise with op (max or add): 128-bit lane h
/// of the result holds op over all 16 lanes of a[h], in each of its 4 floats. A fixed tree,
/// so the result never depends on anything but the values.
template <class Op>
inline __m512 reduce4x16(const __m512* a, Op op) noexcept {
  // 128-bit lanes of t01: a0 q0|q2, a0 q1|q3, a1 q0|q2, a1 q1|q3 (q = quarter), combined.
  const __m512 t01 = op(_mm512_maskz_shuffle_f32x4(k16, a[0], a[1], _MM_SHUFFLE(1, 0, 1, 0)),
                        _mm512_maskz_shuffle_f32x4(k16, a[0], a[1], _MM_SHUFFLE(3, 2, 3, 2)));
  const __m512 t23 = op(_mm512_maskz_shuffle_f32x4(k16, a[2], a[3], _MM_SHUFFLE(1, 0, 1, 0)),
                        _mm512_maskz_shuffle_f32x4(k16, a[2], a[3], _MM_SHUFFLE(3, 2, 3, 2)));
  __m512 u = op(_mm512_maskz_shuffle_f32x4(k16, t01, t23, _MM_SHUFFLE(2, 0, 2, 0)),
                _mm512_maskz_shuffle_f32x4(k16, t01, t23, _MM_SHUFFLE(3, 1, 3, 1)));
  u = op(u, _mm512_maskz_permute_ps(k16, u, _MM_SHUFFLE(1, 0, 3, 2)));
  return op(u, _mm512_maskz_permute_ps(k16, u, _MM_SHUFFLE(2, 3, 0, 1)));
}

/// Every float of 128-bit lane h of x.
template <int H>
inline __m512 lane_bcast(__m512 x) noexcept {
  return _mm512_maskz_shuffle_f32x4(k16, x, x, _MM_SHUFFLE(H, H, H, H));
}

/// Logits of HC <= 4 heads (q: the first head's [D]) for the block's 16 rows (each K row
/// widened once for the HC heads; the 16 x HC partial dot products reduced with reduce16,
/// so one vector holds 16 logits of a head), then the online-softmax update of the HC heads,
/// vectorised across them: ms, zs (128-bit lane h: head h's running max and sum, see
/// load_states), and pw[0..HC)[16], cf[0..HC). The running state stays in registers from
/// block to block (built from and written to memory it made each block wait on
/// store-to-load forwarding).
/// Rows j >= nb are read from krows[j] (any valid row) and masked out of the softmax.
/// pk (or nullptr): 16 rows whose lines are prefetched, one row per K row.
template <std::size_t D, class T, std::size_t HC>
inline void qk_softmax4(const float* q, __m512& ms, __m512& zs, float scale,
                        const T* const* krows, std::size_t nb, float (*pw)[16], float* cf,
                        const char* const* pk) noexcept {
  constexpr std::size_t NV = D / 16;
  alignas(64) __m512 part[HC][16];
  for (std::size_t j = 0; j < 16; ++j) {
    const T* kr = krows[j];
    if (pk) prefetch_lines(pk[j], D * sizeof(T));
    __m512 kv[NV];
    SPARQ_UNROLL
    for (std::size_t c = 0; c < NV; ++c) kv[c] = widen16(kr + 16 * c);
    SPARQ_UNROLL
    for (std::size_t h = 0; h < HC; ++h) {
      const float* qh = q + h * D;
      __m512 a0 = _mm512_mul_ps(_mm512_loadu_ps(qh), kv[0]);
      __m512 a1 = NV > 1 ? _mm512_mul_ps(_mm512_loadu_ps(qh + 16), kv[1]) : _mm512_setzero_ps();
      SPARQ_UNROLL
      for (std::size_t c = 2; c + 1 < NV; c += 2) {
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(qh + 16 * c), kv[c], a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(qh + 16 * c + 16), kv[c + 1], a1);
      }
      part[h][j] = _mm512_add_ps(a0, a1);
    }
  }
  const __m512 ninf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  const __mmask16 valid = static_cast<__mmask16>((1u << nb) - 1u);
  const __m512 vscale = _mm512_set1_ps(scale);
  __m512 lg[4];
  for (std::size_t h = 0; h < 4; ++h)
    lg[h] = h < HC ? _mm512_mask_mov_ps(ninf, valid, _mm512_mul_ps(reduce16(part[h]), vscale))
                   : ninf;
  // Running max: lane h (128-bit) of mo/mn is head h's old/new max. A head whose logits are
  // all -inf so far keeps m = -inf; its exp arguments use 0 instead (exp(-inf) = 0 for its
  // weights; its acc and z are 0, so the factor does not matter).
  const auto vmax4 = [](__m512 a, __m512 b) {
    return _mm512_maskz_max_ps(k16, a, b);
  };
  const auto vadd4 = [](__m512 a, __m512 b) { return _mm512_add_ps(a, b); };
  const __m512 mo = ms;
  const __m512 mn = vmax4(mo, reduce4x16(lg, vmax4));
  const __m512 mx = _mm512_mask_mov_ps(mn, _mm512_cmp_ps_mask(mn, ninf, _CMP_EQ_OQ),
                                       _mm512_setzero_ps());
  const __m512 c = vexp(fbatch(_mm512_sub_ps(mo, mx)));  // exactly 1 where the max holds
  __m512 e[4];
  e[0] = _mm512_maskz_mov_ps(valid, vexp(fbatch(_mm512_sub_ps(lg[0], lane_bcast<0>(mx)))));
  e[1] = HC > 1 ? _mm512_maskz_mov_ps(valid, vexp(fbatch(_mm512_sub_ps(lg[1], lane_bcast<1>(mx)))))
                : _mm512_setzero_ps();
  e[2] = HC > 2 ? _mm512_maskz_mov_ps(valid, vexp(fbatch(_mm512_sub_ps(lg[2], lane_bcast<2>(mx)))))
                : _mm512_setzero_ps();
  e[3] = HC > 3 ? _mm512_maskz_mov_ps(valid, vexp(fbatch(_mm512_sub_ps(lg[3], lane_bcast<3>(mx)))))
                : _mm512_setzero_ps();
  for (std::size_t h = 0; h < HC; ++h) _mm512_store_ps(pw[h], e[h]);
  zs = _mm512_fmadd_ps(zs, c, reduce4x16(e, vadd4));
  ms = mn;
  alignas(64) float o[16];
  _mm512_store_ps(o, c);
  for (std::size_t h = 0; h < HC; ++h) cf[h] = o[4 * h];
}

/// qk_softmax4 over heads [h0, h0 + hn), hn <= HMAX, 4 at a time; ms[i], zs[i]: the state
/// of heads h0 + 4i .. h0 + 4i + 3 (load_states).
template <std::size_t D, class T, std::size_t HMAX, bool Ahead>
inline void qk_softmax(const float* q, std::size_t h0, std::size_t hn, float scale,
                       block16<T, HMAX, Ahead>& b, __m512* ms, __m512* zs) noexcept {
  for (std::size_t hb = 0; hb < hn; hb += 4) {
    const float* qh = q + (h0 + hb) * D;
    __m512& m = ms[hb / 4];
    __m512& z = zs[hb / 4];
    const char* const* pk = Ahead && h0 + hb == 0 ? b.kahead : nullptr;  // once per block
    const auto run = [&](auto hc) {
      qk_softmax4<D, T, decltype(hc)::value>(qh, m, z, scale, b.krows, b.nb, b.pw + hb,
                                             b.cf + hb, pk);
    };
    switch (hn - hb < 4 ? hn - hb : 4) {
      case 1: run(std::integral_constant<std::size_t, 1>{}); break;
      case 2: run(std::integral_constant<std::size_t, 2>{}); break;
      case 3: run(std::integral_constant<std::size_t, 3>{}); break;
      default: run(std::integral_constant<std::size_t, 4>{}); break;
    }
  }
}
/// The running state of heads [h0, h0 + hn) as qk_softmax4 keeps it in registers: 128-bit
/// lane h of ms[i] (zs[i]) holds st.m (st.z) of head h0 + 4i + h four times; lanes of absent
/// heads hold -inf (0), which the update leaves as they are. store_states writes it back.
inline void load_states(const online_state& st, std::size_t h0, std::size_t hn, __m512* ms,
                        __m512* zs) noexcept {
  alignas(64) float a[16], b[16];
  for (std::size_t hb = 0; hb < hn; hb += 4) {
    for (std::size_t i = 0; i < 16; ++i) {
      const bool present = hb + i / 4 < hn;
      a[i] = present ? st.m[h0 + hb + i / 4] : -std::numeric_limits<float>::infinity();
      b[i] = present ? st.z[h0 + hb + i / 4] : 0.0f;
    }
    ms[hb / 4] = _mm512_load_ps(a);
    zs[hb / 4] = _mm512_load_ps(b);
  }
}
inline void store_states(const online_state& st, std::size_t h0, std::size_t hn,
                         const __m512* ms, const __m512* zs) noexcept {
  alignas(64) float a[16], b[16];
  for (std::size_t hb = 0; hb < hn; hb += 4) {
    _mm512_store_ps(a, ms[hb / 4]);
    _mm512_store_ps(b, zs[hb / 4]);
    for (std::size_t h = hb; h < hn && h < hb + 4; ++h) {
      st.m[h0 + h] = a[4 * (h - hb)];
      st.z[h0 + h] = b[4 * (h - hb)];
    }
  }
}

/// acc_h = acc_h * cf_h + sum_j pw[h][j] * V_j for heads [h0, h0 + hn): 4 heads at a time
/// over 4 vectors of d at a time, so a V row is widened once per block and pass, and the
/// accumulators stay in registers for the block's rows.
template <std::size_t D, class T, std::size_t HMAX, bool Ahead>
inline void v_update(std::size_t h0, std::size_t hn, const block16<T, HMAX, Ahead>& b,
                     const online_state& st) noexcept {
  constexpr std::size_t NV = D / 16;
  constexpr std::size_t HB = 4;
  constexpr std::size_t DC = NV < 16 / HB ? NV : 16 / HB;
  for (std::size_t hb = 0; hb < hn; hb += HB) {
    float* acc = st.acc + (h0 + hb) * D;
    const char* const* pv = Ahead && h0 + hb == 0 ? b.vahead : nullptr;  // once per block
    switch (hn - hb < HB ? hn - hb : HB) {
      case 1: v_pass<1, NV, DC, T>(acc, D, b.pw + hb, b.cf + hb, b.vrows, b.nb, pv); break;
      case 2: v_pass<2, NV, DC, T>(acc, D, b.pw + hb, b.cf + hb, b.vrows, b.nb, pv); break;
      case 3: v_pass<3, NV, DC, T>(acc, D, b.pw + hb, b.cf + hb, b.vrows, b.nb, pv); break;
      default: v_pass<4, NV, DC, T>(acc, D, b.pw + hb, b.cf + hb, b.vrows, b.nb, pv); break;
    }
  }
}

/// attend_online for AVX-512 and a head dim D that is a multiple of 16 (64, 128): rows go
/// 16 at a time (qk_softmax, then v_update). With g <= 8 heads the blocks are software-
/// pipelined: block b's V pass runs after block b+1's logits and softmax, so the softmax's
/// latency chain (reductions, exp) overlaps independent work. The arithmetic of every head
/// is the same either way (the order of a head's operations never changes).
/// Rows and prefetches: fill_rows (gathered rows gathered_prefetch_rows ahead; contiguous
/// rows, every line contiguous_prefetch_rows ahead, spread over the block's rows, and one
/// hint per 4 KiB of address).
template <std::size_t D, class T, class KRows, class VRows, class Pos, class Traffic>
void attend_online_16(const float* q, std::size_t g, float scale, const KRows& k,
                      const VRows& v, Pos pos, std::size_t n, const online_state& st,
                      Traffic& traffic) noexcept {
  constexpr std::size_t HMAX = 8;  // heads per pass over a block (stack scratch bound)
  const hint_steps hs = contiguous_hint_steps<T>(k, v);
  block16<T, HMAX, !Pos::gathered> blk[2];
  if constexpr (Pos::gathered)
    prefetch_gathered<D, T>(k, v, pos, 0, gathered_prefetch_rows < n ? gathered_prefetch_rows : n);
  __m512 ms[HMAX / 4], zs[HMAX / 4];
  if (g <= HMAX) {
    load_states(st, 0, g, ms, zs);
    std::size_t cur = 0;
    bool pending = false;
    for (std::size_t b0 = 0; b0 < n; b0 += 16) {
      fill_rows<D>(blk[cur], k, v, pos, b0, n, hs, traffic);
      qk_softmax<D, T, HMAX>(q, 0, g, scale, blk[cur], ms, zs);
      if (pending) v_update<D, T, HMAX>(0, g, blk[cur ^ 1], st);
      pending = true;
      cur ^= 1;
    }
    if (pending) v_update<D, T, HMAX>(0, g, blk[cur ^ 1], st);
    store_states(st, 0, g, ms, zs);
    return;
  }
  for (std::size_t b0 = 0; b0 < n; b0 += 16) {
    fill_rows<D>(blk[0], k, v, pos, b0, n, hs, traffic);
    for (std::size_t h0 = 0; h0 < g; h0 += HMAX) {
      const std::size_t hn = g - h0 < HMAX ? g - h0 : HMAX;
      load_states(st, h0, hn, ms, zs);
      qk_softmax<D, T, HMAX>(q, h0, hn, scale, blk[0], ms, zs);
      store_states(st, h0, hn, ms, zs);
      v_update<D, T, HMAX>(h0, hn, blk[0], st);
    }
  }
}
#else
#define SPARQ_ATTEND_AVX512 0
#endif

}  // namespace sparq::detail
