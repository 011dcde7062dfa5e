#pragma once
/// \file detail/attend_kernel.hpp
/// Exact attention of a group of g query heads over n K/V rows, with an online softmax over
/// blocks of `attend_block` rows (FlashAttention-style running max and sum, so K and V are each
/// read once). The rows are either contiguous (dense baseline) or gathered through an index
/// list (SparQ stage 2); each row is read once per group, not once per head.
///
/// Reads: n rows of K and n rows of V. Writes: acc [g][d], m [g], z [g]. Scratch: p [g][block].
/// Allocates: never. Accumulates in fp32. The block size is a constant, so the summation order
/// (and hence the result) never depends on the thread count.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "../dtype.hpp"
#include "../traffic.hpp"
#include "../view.hpp"
#include "simd.hpp"

namespace sparq::detail {

inline constexpr std::size_t attend_block = 64;

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

#if SPARQ_SIMD && defined(__AVX512F__) && defined(__AVX512BW__)
#define SPARQ_ATTEND_AVX512 1

/// r[j] = sum of the 16 lanes of a[j], for j = 0..15 (a transpose-and-add tree: 45 shuffles
/// and adds for 16 sums instead of 16 separate horizontal reductions).
inline __m512 reduce16(const __m512* a) noexcept {
  __m512 b[8], c[4];
  for (int i = 0; i < 8; ++i)
    b[i] = _mm512_add_ps(_mm512_unpacklo_ps(a[2 * i], a[2 * i + 1]),
                         _mm512_unpackhi_ps(a[2 * i], a[2 * i + 1]));
  for (int i = 0; i < 4; ++i)
    c[i] = _mm512_add_ps(_mm512_shuffle_ps(b[2 * i], b[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_ps(b[2 * i], b[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  const __m512 d0 = _mm512_add_ps(_mm512_shuffle_f32x4(c[0], c[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                  _mm512_shuffle_f32x4(c[0], c[1], _MM_SHUFFLE(3, 1, 3, 1)));
  const __m512 d1 = _mm512_add_ps(_mm512_shuffle_f32x4(c[2], c[3], _MM_SHUFFLE(2, 0, 2, 0)),
                                  _mm512_shuffle_f32x4(c[2], c[3], _MM_SHUFFLE(3, 1, 3, 1)));
  return _mm512_add_ps(_mm512_shuffle_f32x4(d0, d1, _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_shuffle_f32x4(d0, d1, _MM_SHUFFLE(3, 1, 3, 1)));
}

template <class T>
inline __m512 widen16(const T* p) noexcept {
  return load_widen(p);
}

/// attend_online for AVX-512 and a head dim D that is a multiple of 16 (64, 128): rows go
/// 16 at a time. Each K row is widened once for all g heads; the 16 x g partial dot products
/// are reduced with reduce16, so one 16-lane vector holds 16 logits of a head; the softmax
/// update is vectorised over those 16 rows; V rows are widened once per pair of heads.
/// Gathered rows are staged SB at a time into a contiguous block, the next SB prefetched.
template <std::size_t D, class T, class KRows, class VRows, class Pos, class Traffic>
void attend_online_16(const float* q, std::size_t g, float scale, const KRows& k,
                      const VRows& v, Pos pos, std::size_t n, const online_state& st,
                      Traffic& traffic) noexcept {
  constexpr std::size_t NV = D / 16;       // 16-lane vectors per row
  constexpr std::size_t HMAX = 8;          // heads per pass over K (stack scratch bound)
  constexpr std::size_t HB = NV <= 4 ? 4 : 2;  // heads per pass over V (registers)
  constexpr std::size_t row_bytes = D * sizeof(T);
  constexpr std::size_t SB = 64;  // gathered rows staged per super-block
  constexpr float ninf = -std::numeric_limits<float>::infinity();
  alignas(64) __m512 part[HMAX][16];
  alignas(64) float pw[HMAX][16];
  // Gathered rows are first copied into a contiguous, L1-resident staging block of SB rows:
  // the copy loop has no dependencies, so many rows' cache-line misses are in flight at once
  // (measured ~2x faster than computing on the scattered rows directly, even with prefetch).
  alignas(64) T kst[Pos::gathered ? SB : 1][D];
  alignas(64) T vst[Pos::gathered ? SB : 1][D];
  const __m512 vscale = _mm512_set1_ps(scale);

  for (std::size_t b0 = 0; b0 < n; b0 += 16) {
    const std::size_t nb = n - b0 < 16 ? n - b0 : 16;
    const T* krows[16];
    const T* vrows[16];
    if constexpr (Pos::gathered) {
      if (b0 % SB == 0) {
        const std::size_t ns = n - b0 < SB ? n - b0 : SB;
        for (std::size_t j = 0; j < ns; ++j) {
          const T* kr = k.row(pos(b0 + j));
          const T* vr = v.row(pos(b0 + j));
          traffic.read(arena::k, kr, row_bytes);
          traffic.read(arena::v, vr, row_bytes);
          const char* ks = reinterpret_cast<const char*>(kr);
          const char* vs = reinterpret_cast<const char*>(vr);
          for (std::size_t o = 0; o < row_bytes; o += 64) {
            _mm512_store_si512(reinterpret_cast<char*>(kst[j]) + o, _mm512_loadu_si512(ks + o));
            _mm512_store_si512(reinterpret_cast<char*>(vst[j]) + o, _mm512_loadu_si512(vs + o));
          }
        }
        // Ask for the next super-block while this one is computed.
        const std::size_t p1 = b0 + 2 * SB < n ? b0 + 2 * SB : n;
        for (std::size_t j = b0 + SB; j < p1; ++j) {
          const char* kr = reinterpret_cast<const char*>(k.row(pos(j)));
          const char* vr = reinterpret_cast<const char*>(v.row(pos(j)));
          for (std::size_t o = 0; o < row_bytes; o += 64) {
            prefetch(kr + o);
            prefetch(vr + o);
          }
        }
      }
      for (std::size_t j = 0; j < nb; ++j) {
        krows[j] = kst[b0 % SB + j];
        vrows[j] = vst[b0 % SB + j];
      }
    } else {
      for (std::size_t j = 0; j < nb; ++j) {
        krows[j] = k.row(pos(b0 + j));
        vrows[j] = v.row(pos(b0 + j));
        traffic.read(arena::k, krows[j], row_bytes);
        traffic.read(arena::v, vrows[j], row_bytes);
      }
    }
    const __mmask16 valid = static_cast<__mmask16>((1u << nb) - 1u);

    for (std::size_t h0 = 0; h0 < g; h0 += HMAX) {
      const std::size_t hn = g - h0 < HMAX ? g - h0 : HMAX;
      // Partial dot products: part[h][j] = lanes of q_h * K_j.
      for (std::size_t j = 0; j < 16; ++j) {
        if (j >= nb) {
          for (std::size_t h = 0; h < hn; ++h) part[h][j] = _mm512_setzero_ps();
          continue;
        }
        const T* kr = krows[j];
        __m512 kv[NV];
        for (std::size_t c = 0; c < NV; ++c) kv[c] = widen16(kr + 16 * c);
        for (std::size_t h = 0; h < hn; ++h) {
          const float* qh = q + (h0 + h) * D;
          __m512 a0 = _mm512_mul_ps(_mm512_loadu_ps(qh), kv[0]);
          __m512 a1 = NV > 1 ? _mm512_mul_ps(_mm512_loadu_ps(qh + 16), kv[1]) : _mm512_setzero_ps();
          for (std::size_t c = 2; c + 1 < NV; c += 2) {
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(qh + 16 * c), kv[c], a0);
            a1 = _mm512_fmadd_ps(_mm512_loadu_ps(qh + 16 * c + 16), kv[c + 1], a1);
          }
          part[h][j] = _mm512_add_ps(a0, a1);
        }
      }
      // Online softmax over these 16 rows, per head.
      for (std::size_t h = 0; h < hn; ++h) {
        const std::size_t hh = h0 + h;
        const __m512 logit = _mm512_mask_mov_ps(_mm512_set1_ps(ninf), valid,
                                                _mm512_mul_ps(reduce16(part[h]), vscale));
        const float bm = _mm512_reduce_max_ps(logit);
        const float mn = bm > st.m[hh] ? bm : st.m[hh];
        if (mn == ninf) {
          _mm512_store_ps(pw[h], _mm512_setzero_ps());
          continue;
        }
        if (mn != st.m[hh]) {
          const float c = std::exp(st.m[hh] - mn);
          st.z[hh] *= c;
          float* a = st.acc + hh * D;
          const __m512 cv = _mm512_set1_ps(c);
          for (std::size_t i = 0; i < NV; ++i)
            _mm512_storeu_ps(a + 16 * i, _mm512_mul_ps(_mm512_loadu_ps(a + 16 * i), cv));
          st.m[hh] = mn;
        }
        const __m512 e = _mm512_maskz_mov_ps(
            valid, vexp(fbatch(_mm512_sub_ps(logit, _mm512_set1_ps(mn)))));
        _mm512_store_ps(pw[h], e);
        st.z[hh] += _mm512_reduce_add_ps(e);
      }
      // acc_h += sum_j pw[h][j] * V_j, HB heads per pass (accumulators stay in registers).
      for (std::size_t hb = 0; hb < hn; hb += HB) {
        const std::size_t hc = hn - hb < HB ? hn - hb : HB;
        __m512 acc[HB][NV];
        for (std::size_t h = 0; h < HB; ++h)
          for (std::size_t i = 0; i < NV; ++i)
            acc[h][i] = h < hc ? _mm512_loadu_ps(st.acc + (h0 + hb + h) * D + 16 * i)
                               : _mm512_setzero_ps();
        for (std::size_t j = 0; j < nb; ++j) {
          const T* vr = vrows[j];
          __m512 vv[NV];
          for (std::size_t i = 0; i < NV; ++i) vv[i] = widen16(vr + 16 * i);
          for (std::size_t h = 0; h < HB; ++h) {
            if (h >= hc) break;
            const __m512 w = _mm512_set1_ps(pw[hb + h][j]);
            for (std::size_t i = 0; i < NV; ++i) acc[h][i] = _mm512_fmadd_ps(w, vv[i], acc[h][i]);
          }
        }
        for (std::size_t h = 0; h < hc; ++h)
          for (std::size_t i = 0; i < NV; ++i)
            _mm512_storeu_ps(st.acc + (h0 + hb + h) * D + 16 * i, acc[h][i]);
      }
    }
  }
}
#else
#define SPARQ_ATTEND_AVX512 0
#endif

/// Folds n rows (positions pos(0..n)) into the online state of g heads.
/// q: [g][d] fp32; p: scratch [g][attend_block]. k, v: any row source with `row(s)` and an
/// `element_type` (rows_view, paged_rows_view): the arithmetic never depends on where a row is.
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

/// out[h] = acc[h] / z[h]; lse[h] = m[h] + log z[h] (natural log) when lse is given.
inline void online_finish(const online_state& st, std::size_t g, std::size_t d, float* out,
                          float* lse) noexcept {
  for (std::size_t h = 0; h < g; ++h) {
    const float inv = st.z[h] > 0.0f ? 1.0f / st.z[h] : 0.0f;
    for (std::size_t i = 0; i < d; ++i) out[h * d + i] = st.acc[h * d + i] * inv;
    if (lse) lse[h] = st.m[h] + std::log(st.z[h]);
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
