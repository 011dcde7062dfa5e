#pragma once
/// \file topk.hpp
/// Deterministic top-k selection in O(n): the indices of the k largest values, lower index
/// winning exact ties, returned in ascending index order (so a gather walks memory forward).
///
/// Method: map each float to an order-preserving 32-bit key; one histogram pass over the top
/// 11 key bits finds the bucket that holds the k-th largest value; one pass lists every index
/// at or above that bucket (already ascending); the few candidates inside the bucket are
/// ranked by (key desc, index asc) with nth_element, and the list is filtered in place.
/// For k <= n/5 (n >= 256) an exact prefilter runs first: the bucket of the k-th largest
/// block maximum bounds the k-th largest value from below (block_max_threshold), so only the
/// values reaching it (~1.2x k for independent values at k = n/16) are listed and ranked.
/// NaN ranks below -inf (a NaN is never preferred to a number).
/// SIMD: the key, histogram, block-maximum and collect loops run 16 lanes at a time with
/// AVX-512 intrinsics, or a vector at a time on xsimd int32 batches (AVX2, SSE2, NEON);
/// the scalar loops define what they compute.
///
/// Reads: x once or twice. Allocates: never (scratch from `top_k_scratch_bytes`).

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>

#include "detail/simd.hpp"
#include "detail/size_math.hpp"
#include "dtype.hpp"

#if defined(__AVX512F__) && !defined(SPARQ_NO_SIMD)
#include <immintrin.h>
#endif

namespace sparq {

namespace detail {
inline constexpr int topk_bucket_bits = 11;
inline constexpr std::size_t topk_buckets = std::size_t{1} << topk_bucket_bits;

/// Order-preserving key: a < b (as floats, NaN lowest) => key(a) < key(b).
inline std::uint32_t order_key(float x) noexcept {
  const std::uint32_t u = float_bits(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0;  // NaN below everything
  if (u == 0x80000000u) return 0x80000000u;          // -0 ties with +0
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
inline std::size_t align_up(std::size_t n, std::size_t a) noexcept { return (n + a - 1) / a * a; }
inline constexpr int topk_shift = 32 - topk_bucket_bits;
inline std::uint32_t bucket_of(float x) noexcept { return order_key(x) >> topk_shift; }

#if defined(__AVX512F__) && !defined(SPARQ_NO_SIMD)
#define SPARQ_TOPK_AVX512 1
// The masked (maskz) forms of the shifts: GCC 12's unmasked _mm512_srai/srli_epi32 pass
// _mm512_undefined_epi32() and trip -Wuninitialized once inlined (GCC bug 105593).
inline __m512i srai32(__m512i u, unsigned n) noexcept {
  return _mm512_maskz_srai_epi32(static_cast<__mmask16>(0xffff), u, n);
}
inline __m512i srli32(__m512i u, unsigned n) noexcept {
  return _mm512_maskz_srli_epi32(static_cast<__mmask16>(0xffff), u, n);
}
/// order_key of 16 floats.
inline __m512i order_key16(__m512 v) noexcept {
  const __m512i u = _mm512_castps_si512(v);
  const __m512i flip =
      _mm512_or_si512(srai32(u, 31), _mm512_set1_epi32(static_cast<int>(0x80000000u)));
  const __mmask16 nan = _mm512_cmpgt_epu32_mask(
      _mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
  const __mmask16 negzero = _mm512_cmpeq_epi32_mask(u, _mm512_set1_epi32(static_cast<int>(0x80000000u)));
  // NaN -> 0 (below everything); -0 -> the key of +0 (0x80000000).
  const __m512i key = _mm512_mask_mov_epi32(_mm512_xor_si512(u, flip), negzero,
                                            _mm512_set1_epi32(static_cast<int>(0x80000000u)));
  return _mm512_maskz_mov_epi32(static_cast<__mmask16>(~nan), key);
}
#else
#define SPARQ_TOPK_AVX512 0
#endif

#if SPARQ_SIMD && !SPARQ_TOPK_AVX512
// The other SIMD tiers (AVX2, SSE2, NEON) through xsimd's int32 batches: a signed key,
// order_key ^ 0x80000000, so that signed compares and maxima (which every tier has) order
// the keys as order_key does.
#define SPARQ_TOPK_LANES 1
using kbatch = xsimd::batch<std::int32_t, arch>;
static_assert(kbatch::size == lanes, "int32 and float batches of one width");
inline constexpr std::int32_t key_bias = std::numeric_limits<std::int32_t>::min();

/// order_key of `lanes` floats, minus 2^31 (as int32): x >= 0 keeps its bits, x < 0 flips
/// all but the sign, -0 -> 0 (the key of +0), NaN -> INT32_MIN (key 0, below everything).
inline kbatch signed_key(const fbatch& v) noexcept {
  const kbatch u = xsimd::bitwise_cast<kbatch>(v);
  const kbatch mag = u & kbatch(0x7fffffff);
  const kbatch s = u ^ ((u >> 31) & kbatch(0x7fffffff));
  return xsimd::select(mag > kbatch(0x7f800000), kbatch(key_bias),
                       xsimd::select(u == kbatch(key_bias), kbatch(0), s));
}
#else
#define SPARQ_TOPK_LANES 0
#endif

/// The highest bucket b whose count, added to the counts of every bucket above it, reaches
/// `need` (h1[b] + h2[b] per bucket; h2 may be null); *above = the count above b. (If all
/// the buckets together hold fewer than need values: bucket 0.)
/// h1, h2 (topk_buckets each) = the counts of bucket(i) for i in [0, n), alternate i in
/// alternate copies (so runs of one bucket do not chain increments through one counter);
/// the caller adds them (bucket_reaching does).
template <class Bucket>
inline void count_buckets(std::size_t n, Bucket&& bucket, std::uint32_t* h1,
                          std::uint32_t* h2) noexcept {
  std::memset(h1, 0, topk_buckets * sizeof(std::uint32_t));
  std::memset(h2, 0, topk_buckets * sizeof(std::uint32_t));
  std::size_t i = 0;
  for (; i + 2 <= n; i += 2) {
    ++h1[bucket(i)];
    ++h2[bucket(i + 1)];
  }
  for (; i < n; ++i) ++h1[bucket(i)];
}

inline std::uint32_t bucket_reaching(const std::uint32_t* h1, const std::uint32_t* h2,
                                     std::size_t need, std::size_t* above) noexcept {
  std::size_t a = 0, b = topk_buckets;
  while (b-- > 0) {
    const std::size_t cnt = h1[b] + (h2 ? h2[b] : 0u);
    if (a + cnt >= need || b == 0) break;
    a += cnt;
  }
  *above = a;
  return static_cast<std::uint32_t>(b);
}

/// hist[bucket_of(x[i])]++ for i in [0, n). Two interleaved copies (hist and hist2) break the
/// store-to-load chains that repeated buckets cause; the caller sums them.
inline void histogram_keys(const float* x, std::size_t n, std::uint32_t* hist,
                           std::uint32_t* hist2) noexcept {
  std::size_t i = 0;
#if SPARQ_TOPK_AVX512
  alignas(64) std::uint32_t kb[16];
  for (; i + 16 <= n; i += 16) {
    _mm512_store_si512(reinterpret_cast<__m512i*>(kb),
                       srli32(order_key16(_mm512_loadu_ps(x + i)), topk_shift));
    for (int j = 0; j < 16; j += 2) {
      ++hist[kb[j]];
      ++hist2[kb[j + 1]];
    }
  }
#elif SPARQ_TOPK_LANES
  // bucket = order_key >> topk_shift = (signed key >> topk_shift) + half the buckets
  alignas(64) std::int32_t kb[lanes];
  const kbatch half(static_cast<std::int32_t>(topk_buckets / 2));
  for (; i + lanes <= n; i += lanes) {
    ((signed_key(fbatch::load_unaligned(x + i)) >> topk_shift) + half).store_aligned(kb);
    for (std::size_t j = 0; j < lanes; j += 2) {
      ++hist[kb[j]];
      ++hist2[kb[j + 1]];
    }
  }
#endif
  for (; i + 2 <= n; i += 2) {
    ++hist[bucket_of(x[i])];
    ++hist2[bucket_of(x[i + 1])];
  }
  for (; i < n; ++i) ++hist[bucket_of(x[i])];
}

/// Writes every i in [s0, s1) with order_key(x[i]) >= lo to out, ascending; returns the
/// count. out must hold s1 - s0 entries: past the count they may be overwritten (the
/// branch-free loops store every index). (AVX-512: compare and compress-store 16 indices at
/// a time; AVX2, SSE2, NEON: compare a vector at a time.)
inline std::size_t collect_key_at_least(const float* x, std::size_t s0, std::size_t s1,
                                        std::uint32_t lo, std::uint32_t* out) noexcept {
  std::size_t m = 0, i = s0;
#if SPARQ_TOPK_AVX512
  const __m512i lov = _mm512_set1_epi32(static_cast<int>(lo));
  __m512i idx = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(s0)),
                                 _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
  const __m512i sixteen = _mm512_set1_epi32(16);
  for (; i + 16 <= s1; i += 16) {
    const __mmask16 k = _mm512_cmpge_epu32_mask(order_key16(_mm512_loadu_ps(x + i)), lov);
    _mm512_mask_compressstoreu_epi32(out + m, k, idx);
    m += static_cast<std::size_t>(__builtin_popcount(k));
    idx = _mm512_add_epi32(idx, sixteen);
  }
  if (i < s1) {  // the tail with the same compare under a mask
    const __mmask16 t = static_cast<__mmask16>((1u << (s1 - i)) - 1u);
    const __mmask16 k =
        _mm512_mask_cmpge_epu32_mask(t, order_key16(_mm512_maskz_loadu_ps(t, x + i)), lov);
    _mm512_mask_compressstoreu_epi32(out + m, k, idx);
    m += static_cast<std::size_t>(__builtin_popcount(k));
  }
#elif SPARQ_TOPK_LANES
  // The compare by vector, then the scalar loop's branch-free stores; the tail on a padded
  // copy, of which only the first s1 - i lanes are stored.
  const kbatch lov(static_cast<std::int32_t>(lo ^ 0x80000000u));
  alignas(64) std::int32_t pass[lanes];
  for (; i + lanes <= s1; i += lanes) {
    const auto ge = signed_key(fbatch::load_unaligned(x + i)) >= lov;
    if (!xsimd::any(ge)) continue;
    xsimd::select(ge, kbatch(1), kbatch(0)).store_aligned(pass);
    for (std::size_t j = 0; j < lanes; ++j) {
      out[m] = static_cast<std::uint32_t>(i + j);
      m += static_cast<std::size_t>(pass[j]);
    }
  }
  if (i < s1) {
    alignas(64) float pad[lanes] = {};
    const std::size_t w = s1 - i;
    for (std::size_t t = 0; t < w && t < lanes; ++t) pad[t] = x[i + t];
    xsimd::select(signed_key(fbatch::load_aligned(pad)) >= lov, kbatch(1), kbatch(0))
        .store_aligned(pass);
    for (std::size_t j = 0; j < w && j < lanes; ++j) {
      out[m] = static_cast<std::uint32_t>(i + j);
      m += static_cast<std::size_t>(pass[j]);
    }
  }
#else
  for (; i < s1; ++i) {
    out[m] = static_cast<std::uint32_t>(i);
    m += order_key(x[i]) >= lo;
  }
#endif
  return m;
}

/// Writes every i in [s0, s1) with bucket_of(x[i]) >= bucket to out, ascending; returns the
/// count.
inline std::size_t collect_at_or_above(const float* x, std::size_t s0, std::size_t s1,
                                       std::uint32_t bucket, std::uint32_t* out) noexcept {
  return collect_key_at_least(x, s0, s1, bucket << topk_shift, out);
}

/// Vectors per block that block_max_threshold should use to keep `want` of n values, or 0
/// when a prefilter would not pay (want above n/5: most values pass it anyway).
inline std::size_t prefilter_vectors(std::size_t n, std::size_t want) noexcept {
  // A block of V vectors gives 16 maxima per 16*V values; the want-th largest maximum of
  // n/V blocks passes about want * (1 + (V-1)/2 * want*V/n) values for independent data:
  // aim at want*V <= 0.4 n (V = 8 keeps ~1.2x want at k = n/16).
  std::size_t v = 16;
  while (v >= 2 && want * v * 5 > n * 2) v /= 2;
  return v >= 2 ? v : 0;
}

/// A key that at least `want` of x[0, n) reach, hence at most the want-th largest key: the
/// lowest key of the bucket that holds the want-th largest of the maxima of disjoint blocks
/// (block = one lane of V consecutive 16-value vectors; each maximum is a distinct element).
/// Every index of the exact top-want then has order_key(x[i]) >= the result, so collecting
/// those is an exact prefilter.
/// Requires 1 <= want <= 16 * ceil(n / (16 V)); maxkeys: that many uint32 of scratch.
inline std::uint32_t block_max_threshold(const float* x, std::size_t n, std::size_t want,
                                         std::size_t V, std::uint32_t* maxkeys) noexcept {
  std::size_t nb = 0;
  for (std::size_t p0 = 0; p0 < n; p0 += 16 * V, nb += 16) {
#if SPARQ_TOPK_AVX512
    __m512i mk = _mm512_setzero_si512();
    for (std::size_t v = 0, p = p0; v < V && p < n; ++v, p += 16) {
      if (p + 16 <= n) {
        mk = _mm512_maskz_max_epu32(static_cast<__mmask16>(0xffff), mk,
                                    order_key16(_mm512_loadu_ps(x + p)));
      } else {  // lanes past n keep their maximum (a missing value is key 0, the lowest)
        const __mmask16 t = static_cast<__mmask16>((1u << (n - p)) - 1u);
        mk = _mm512_mask_max_epu32(mk, t, mk, order_key16(_mm512_maskz_loadu_ps(t, x + p)));
      }
    }
    _mm512_storeu_si512(reinterpret_cast<__m512i*>(maxkeys + nb), mk);
#elif SPARQ_TOPK_LANES
    // Lane l of a block is lane l % lanes of its vector l / lanes of each 16 values.
    constexpr std::size_t nv = 16 / lanes;
    kbatch mk[nv];
    for (std::size_t c = 0; c < nv; ++c) mk[c] = kbatch(key_bias);
    for (std::size_t v = 0, p = p0; v < V && p < n; ++v, p += 16) {
      alignas(64) float pad[16];
      const float* src = x + p;
      if (p + 16 > n) {  // NaN (key 0, the lowest) past n: those lanes keep their maximum
        for (std::size_t t = 0; t < 16; ++t)
          pad[t] = p + t < n ? x[p + t] : std::numeric_limits<float>::quiet_NaN();
        src = pad;
      }
      for (std::size_t c = 0; c < nv; ++c)
        mk[c] = xsimd::max(mk[c], signed_key(fbatch::load_unaligned(src + c * lanes)));
    }
    for (std::size_t c = 0; c < nv; ++c) {
      alignas(64) std::int32_t t[lanes];
      mk[c].store_aligned(t);
      for (std::size_t j = 0; j < lanes; ++j)
        maxkeys[nb + c * lanes + j] = static_cast<std::uint32_t>(t[j]) ^ 0x80000000u;
    }
#else
    for (std::size_t lane = 0; lane < 16; ++lane) {
      std::uint32_t mk = 0;
      for (std::size_t v = 0, p = p0 + lane; v < V && p < n; ++v, p += 16)
        mk = order_key(x[p]) > mk ? order_key(x[p]) : mk;
      maxkeys[nb + lane] = mk;
    }
#endif
  }
  // The bucket of the want-th largest maximum, by a histogram (branch-free: a selection by
  // comparisons mispredicted its way to ~9 ns per maximum) over the maxima's own key range
  // [kmin, kmax] cut into topk_buckets equal spans; the bucket's lowest key is at most that
  // maximum. (The top key bits, as top_k's histogram uses, make a bucket a quarter octave of
  // float values: on SparQ's scores at k = S/16 that let ~1.85x want values through; the
  // maxima's range gives ~1.2x.) Key 0 (an empty lane past n, a NaN) is left out of kmin and
  // counted in bucket 0; a bucket-0 answer then returns 0, which passes everything.
  // (Plain min/max reductions, so the compiler vectorises them: mk - 1 wraps key 0 to the
  // top, leaving it out of the minimum; a conditional form ran ~15x slower.)
  std::uint32_t kmax = 0, kmin1 = 0xffffffffu, kmin0 = 0xffffffffu;
  for (std::size_t i = 0; i < nb; ++i) {
    const std::uint32_t mk = maxkeys[i];
    kmax = mk > kmax ? mk : kmax;
    kmin1 = mk - 1u < kmin1 ? mk - 1u : kmin1;
    kmin0 = mk < kmin0 ? mk : kmin0;
  }
  if (kmax == 0) return 0;
  const std::uint32_t kmin = kmin1 + 1u;  // the lowest nonzero key
  const bool zero = kmin0 == 0;
  unsigned shift = 0;
  while (((kmax - kmin) >> shift) >= topk_buckets) ++shift;
  alignas(64) std::uint32_t h1[topk_buckets], h2[topk_buckets];
  count_buckets(
      nb,
      [maxkeys, kmin, shift](std::size_t i) {
        const std::uint32_t mk = maxkeys[i];
        return mk >= kmin ? (mk - kmin) >> shift : 0u;
      },
      h1, h2);
  std::size_t above = 0;
  const std::uint32_t b = bucket_reaching(h1, h2, want, &above);
  if (b == 0) return zero ? 0u : kmin;
  return kmin + (b << shift);
}

/// list[0..m): ascending indices into x whose buckets are >= `bucket`. Keeps every index
/// above the bucket and the `need` best inside it (key desc, index asc), in place and still
/// ascending; returns the new count. cand: m entries of scratch.
inline std::size_t resolve_bucket(const float* x, std::uint32_t* list, std::size_t m,
                                  std::uint32_t bucket, std::size_t need,
                                  std::uint64_t* cand) noexcept {
  // Packing (key, ~index) into 64 bits makes (key desc, index asc) one unsigned comparison.
  std::size_t c = 0;
  for (std::size_t j = 0; j < m; ++j) {
    const std::uint32_t key = order_key(x[list[j]]);
    if ((key >> topk_shift) == bucket)
      cand[c++] = (std::uint64_t{key} << 32) | (0xffffffffu - list[j]);
  }
  // A crowded bucket: narrow it to the sub-bucket of the next 11 key bits that holds the
  // need-th best (a histogram, branch-free) before ranking by comparisons, which mispredict
  // their way to ~10 ns per candidate.
  if (c > 256) {
    constexpr int sub_shift = topk_shift - topk_bucket_bits;
    constexpr std::uint32_t sub_mask = topk_buckets - 1;
    alignas(64) std::uint32_t h[topk_buckets];
    std::memset(h, 0, sizeof h);
    for (std::size_t j = 0; j < c; ++j) ++h[(cand[j] >> (32 + sub_shift)) & sub_mask];
    std::size_t above = 0;
    const std::uint32_t sb = bucket_reaching(h, nullptr, need, &above);
    std::size_t c2 = 0;
    for (std::size_t j = 0; j < c; ++j) {
      const std::uint64_t v = cand[j];
      cand[c2] = v;
      c2 += ((v >> (32 + sub_shift)) & sub_mask) == sb;
    }
    c = c2;
    need -= above;
  }
  std::nth_element(cand, cand + (need - 1), cand + c,
                   [](std::uint64_t a, std::uint64_t b) { return a > b; });
  const std::uint64_t threshold = cand[need - 1];
  std::size_t w = 0;
  for (std::size_t j = 0; j < m; ++j) {
    const std::uint32_t i = list[j];
    const std::uint64_t packed = (std::uint64_t{order_key(x[i])} << 32) | (0xffffffffu - i);
    list[w] = i;
    w += packed >= threshold;
  }
  return w;
}
/// list[0..m): ascending indices into x. Keeps the `need` best of them (key desc, index asc),
/// in place and still ascending; returns min(need, m). cand: m entries of scratch.
/// One gathering pass packs each entry as (key, ~index) into cand and finds the keys' range;
/// a histogram spreads that range (not the top key bits: a prefiltered list spans a few
/// top buckets) over topk_buckets buckets, so the bucket of the need-th best holds few
/// entries, ranked by nth_element; a last pass keeps the entries at or above it.
inline std::size_t keep_best(const float* x, std::uint32_t* list, std::size_t m,
                             std::size_t need, std::uint64_t* cand) noexcept {
  if (need >= m) return m;
  if (need == 0) return 0;
  std::uint32_t lo = 0xffffffffu, hi = 0;
  for (std::size_t j = 0; j < m; ++j) {
    const std::uint32_t key = order_key(x[list[j]]);
    cand[j] = (std::uint64_t{key} << 32) | (0xffffffffu - list[j]);
    lo = key < lo ? key : lo;
    hi = key > hi ? key : hi;
  }
  unsigned shift = 0;
  while (((hi - lo) >> shift) >= topk_buckets) ++shift;
  alignas(64) std::uint32_t h1[topk_buckets], h2[topk_buckets];
  const auto bucket = [cand, lo, shift](std::size_t j) {
    return (static_cast<std::uint32_t>(cand[j] >> 32) - lo) >> shift;
  };
  count_buckets(m, bucket, h1, h2);
  std::size_t above = 0;
  const std::uint32_t b = bucket_reaching(h1, h2, need, &above);
  const std::size_t c = h1[b] + h2[b];
  // The bucket's entries, ranked by nth_element in a stack buffer when they fit; a crowded
  // bucket (many equal or nearly equal keys) goes the top-bucket route of resolve_bucket.
  constexpr std::size_t cap = 1024;
  if (c > cap) {
    count_buckets(m, [cand](std::size_t j) { return static_cast<std::uint32_t>(cand[j] >> (32 + topk_shift)); }, h1, h2);
    std::size_t a0 = 0;
    const std::uint32_t tb = bucket_reaching(h1, h2, need, &a0);
    return resolve_bucket(x, list, m, tb, need - a0, cand);
  }
  alignas(64) std::uint64_t in_b[cap];
  std::size_t n_b = 0;
  for (std::size_t j = 0; j < m; ++j) {
    if (bucket(j) == b) in_b[n_b++] = cand[j];
  }
  const std::size_t r = need - above;  // 1..c
  std::nth_element(in_b, in_b + (r - 1), in_b + n_b,
                   [](std::uint64_t u, std::uint64_t v) { return u > v; });
  const std::uint64_t threshold = in_b[r - 1];
  std::size_t w = 0;
  for (std::size_t j = 0; j < m; ++j) {
    list[w] = list[j];
    w += cand[j] >= threshold;
  }
  return w;
}
}  // namespace detail

/// Scratch bytes `top_k` needs for n values (SIZE_MAX if that overflows size_t).
constexpr std::size_t top_k_scratch_bytes(std::size_t n) noexcept {
  return detail::sat_add(detail::topk_buckets * sizeof(std::uint32_t) + 64,
                         detail::sat_mul(n, sizeof(std::uint64_t)));
}

/// Writes the indices of the min(k, n) largest x[i] to out (ascending) and returns their
/// count. Ties: the lower index wins. `out` must hold n entries (it doubles as the candidate
/// list). `scratch`: top_k_scratch_bytes(n) bytes, any alignment.
inline std::size_t top_k(const float* x, std::size_t n, std::size_t k, std::uint32_t* out,
                         void* scratch) noexcept {
  if (k >= n) {
    for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<std::uint32_t>(i);
    return n;
  }
  if (k == 0) return 0;
  auto* base = static_cast<unsigned char*>(scratch);
  base += (64 - reinterpret_cast<std::uintptr_t>(base) % 64) % 64;
  auto* hist = reinterpret_cast<std::uint32_t*>(base);
  auto* cand = reinterpret_cast<std::uint64_t*>(base + detail::topk_buckets * 4);

  // Small k of many values: the exact block-max prefilter (block maxima first, then only
  // the values reaching their threshold). The candidate area holds the maxima first.
  if (const std::size_t V = n >= 256 ? detail::prefilter_vectors(n, k) : 0) {
    const std::uint32_t lo =
        detail::block_max_threshold(x, n, k, V, reinterpret_cast<std::uint32_t*>(cand));
    const std::size_t m = detail::collect_key_at_least(x, 0, n, lo, out);
    return detail::keep_best(x, out, m, k, cand);
  }

  // The candidate area doubles as the second histogram copy when it is large enough.
  const bool two = n * sizeof(std::uint64_t) >= detail::topk_buckets * sizeof(std::uint32_t);
  auto* hist2 = two ? reinterpret_cast<std::uint32_t*>(cand) : hist;
  std::memset(hist, 0, detail::topk_buckets * sizeof(std::uint32_t));
  if (two) std::memset(hist2, 0, detail::topk_buckets * sizeof(std::uint32_t));
  detail::histogram_keys(x, n, hist, hist2);

  // Bucket b holds the k-th largest: above(b) < k <= above(b) + count(b).
  std::size_t above = 0;
  const std::uint32_t bucket = detail::bucket_reaching(hist, two ? hist2 : nullptr, k, &above);
  const std::size_t need = k - above;  // how many to take from the bucket, 1..count(b)

  // Every index at or above the bucket, ascending; then the bucket's best `need`.
  const std::size_t m = detail::collect_at_or_above(x, 0, n, bucket, out);
  if (m == k) return k;
  return detail::resolve_bucket(x, out, m, bucket, need, cand);
}

}  // namespace sparq
