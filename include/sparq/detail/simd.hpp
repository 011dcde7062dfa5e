#pragma once
/// \file detail/simd.hpp
/// The SIMD vocabulary of the kernels: one fp32 batch type for the arch the user's compiler
/// flags select (xsimd::default_arch), widening loads from f32/f16/bf16 storage, and the few
/// reductions the kernels need. With SPARQ_NO_SIMD (or no xsimd-supported arch) the kernels
/// compile their scalar loops only.
///
/// Flag tiers: x86-64 (SSE2, 4 lanes; f16 widened in scalar code), x86-64-v3 (AVX2 + FMA +
/// F16C, 8 lanes), x86-64-v4 or native on AVX-512 machines (16 lanes), aarch64 (NEON, 4 lanes).

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "../dtype.hpp"

#if !defined(SPARQ_NO_SIMD)
#include <xsimd/xsimd.hpp>
#if defined(__SSE2__) || defined(__ARM_NEON) || defined(__aarch64__)
#define SPARQ_SIMD 1
#endif
#endif
#if !defined(SPARQ_SIMD)
#define SPARQ_SIMD 0
#endif

#if SPARQ_SIMD && (defined(__SSE2__) || defined(__x86_64__))
#include <immintrin.h>
#elif SPARQ_SIMD && defined(__aarch64__)
#include <arm_neon.h>
#endif

/// Fully unrolls the loop that follows: the kernels' loops over small register arrays (heads
/// x vectors of a row) have compile-time trip counts, but GCC 12 at -O2 leaves them rolled
/// and keeps the arrays on the stack (the AVX-512 attention kernel ran ~3x slower at -O2 than
/// at -O3 without this). The AVX-512 kernel carries only marks that leave GCC 12's -O3 code
/// unchanged (f03c4c3). Define SPARQ_UNROLL (empty, say) before including sparq to override.
#if !defined(SPARQ_UNROLL)
#if defined(__GNUC__)
#define SPARQ_UNROLL _Pragma("GCC unroll 32")
#else
#define SPARQ_UNROLL
#endif
#endif

namespace sparq::detail {

#if SPARQ_SIMD
using arch = xsimd::default_arch;
using fbatch = xsimd::batch<float, arch>;
inline constexpr std::size_t lanes = fbatch::size;

#if defined(__AVX512F__)
/// All 16 lanes. AVX-512 code here uses the zero-masking (maskz) form of an intrinsic with
/// this mask wherever the plain form passes _mm512_undefined_*(): GCC 12 flags those as
/// uninitialized once inlined deep enough (GCC bug 105593); the instruction is the same.
inline constexpr __mmask16 k16 = static_cast<__mmask16>(0xffff);
#endif

/// Loads `lanes` consecutive elements of storage type T, widened to fp32.
inline fbatch load_widen(const float* p) noexcept { return fbatch::load_unaligned(p); }

// Widening conversions by tier; lanes is 16 with AVX-512, 8 with AVX2, 4 with SSE/NEON.
inline fbatch load_widen(const bf16* p) noexcept {
  // bf16 is the top half of an fp32: zero-extend each 16-bit word to 32 bits, shift up.
#if defined(__AVX512F__) && defined(__AVX512BW__)
  static_assert(lanes == 16, "AVX-512 build expects 16 fp32 lanes");
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return fbatch(_mm512_castsi512_ps(
      _mm512_maskz_slli_epi32(k16, _mm512_maskz_cvtepu16_epi32(k16, h), 16)));
#elif defined(__AVX2__)
  static_assert(lanes == 8, "AVX2 build expects 8 fp32 lanes");
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return fbatch(_mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)));
#elif defined(__aarch64__)
  static_assert(lanes == 4, "NEON build expects 4 fp32 lanes");
  const uint16x4_t h = vld1_u16(reinterpret_cast<const std::uint16_t*>(p));
  return fbatch(vreinterpretq_f32_u32(vshll_n_u16(h, 16)));
#else
  static_assert(lanes == 4, "SSE2 build expects 4 fp32 lanes");
  const __m128i h = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  return fbatch(_mm_castsi128_ps(_mm_unpacklo_epi16(_mm_setzero_si128(), h)));
#endif
}

inline fbatch load_widen(const f16* p) noexcept {
#if defined(__AVX512F__) && defined(__AVX512BW__)
  return fbatch(_mm512_maskz_cvtph_ps(k16, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))));
#elif defined(__AVX2__) && defined(__F16C__)
  return fbatch(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
#elif defined(__aarch64__)
  const uint16x4_t h = vld1_u16(reinterpret_cast<const std::uint16_t*>(p));
  return fbatch(vcvt_f32_f16(vreinterpret_f16_u16(h)));
#elif defined(__F16C__)
  return fbatch(_mm_cvtph_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
#else
  // No hardware half conversion on this tier (plain x86-64): widen in scalar code.
  alignas(64) float tmp[lanes];
  for (std::size_t i = 0; i < lanes; ++i) tmp[i] = to_float(p[i]);
  return fbatch::load_aligned(tmp);
#endif
}

/// Lane-wise max. (AVX-512: the masked form; GCC 12's _mm512_max_ps passes
/// _mm512_undefined_ps() and trips -Wuninitialized once inlined, GCC bug 105593.)
inline fbatch vmax(const fbatch& a, const fbatch& b) noexcept {
#if defined(__AVX512F__)
  return fbatch(_mm512_maskz_max_ps(k16, a, b));
#else
  return xsimd::max(a, b);
#endif
}

inline float hsum(const fbatch& x) noexcept { return xsimd::hadd(x); }

/// exp(x) lane-wise, for the softmax kernels. AVX-512: Cephes-style range reduction with a
/// degree-6 polynomial and vscalefps (about 12 instructions, ~1 ulp, exp(-inf) = 0, inputs
/// below -104 give 0); elsewhere xsimd::exp.
inline fbatch vexp(const fbatch& xin) noexcept {
#if defined(__AVX512F__)
  const __m512 x = _mm512_maskz_max_ps(static_cast<__mmask16>(0xffff), _mm512_set1_ps(-104.0f),
                                       _mm512_maskz_min_ps(static_cast<__mmask16>(0xffff), xin,
                                                           _mm512_set1_ps(88.7f)));
  const __m512 n = _mm512_maskz_roundscale_ps(
      k16, _mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  const __m512 rr = _mm512_mul_ps(r, r);
  p = _mm512_fmadd_ps(p, rr, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return fbatch(_mm512_maskz_scalef_ps(static_cast<__mmask16>(0xffff), p, n));
#else
  return xsimd::exp(xin);
#endif
}
inline float hmax(const fbatch& x) noexcept {
  alignas(64) float tmp[lanes];
  x.store_aligned(tmp);
  float m = tmp[0];
  for (std::size_t i = 1; i < lanes; ++i) m = tmp[i] > m ? tmp[i] : m;
  return m;
}
#else
inline constexpr std::size_t lanes = 1;
#endif

/// Hints the cache to fetch the line holding p into L1 (a no-op where unsupported).
/// An asm statement on x86-64 and aarch64, not __builtin_prefetch: GCC 12's IPA pure-const
/// pass counts a function whose only effects are __builtin_prefetch calls as pure and deletes
/// the calls to it when they are not inlined early: sparq-bench's SparQ pattern read lost its
/// gathered-row prefetch that way (a lambda holding only prefetches), and a helper holding
/// stage 2's did too (its gathered attention ran 2.5x slower per row in a throwaway
/// single-thread A/B, 2026-11-25). The asm's memory operand names the address; the compiler
/// treats it as a one-byte read, nothing is loaded, and a prefetch never faults, also past the
/// end of a buffer (the idiom of the Linux kernel's prefetch; inline-asm operands are not
/// instrumented by the sanitizers). Clang 14 rejects the "p" / %a0 address-only form.
inline void prefetch(const void* p) noexcept {
#if defined(__GNUC__) && defined(__x86_64__)
  asm volatile("prefetcht0 %0" : : "m"(*static_cast<const char*>(p)));
#elif defined(__GNUC__) && defined(__aarch64__)
  asm volatile("prfm pldl1keep, %0" : : "Q"(*static_cast<const char*>(p)));
#elif defined(__GNUC__)
  __builtin_prefetch(p, 0, 3);
#else
  (void)p;
#endif
}

}  // namespace sparq::detail
