#pragma once
/// \file merge.hpp
/// Merging partial attention states (the "merge_state" of FlashInfer / flash-decoding).
///
/// Attention of one query head over a set of positions P can be kept as the pair
///
///   out_P = sum_{s in P} e^{x_s} V[s] / Z_P,   lse_P = log Z_P,   Z_P = sum_{s in P} e^{x_s}
///
/// with x_s = scale * q.K[s] (natural log). For two disjoint sets A and B the state of A u B is
///
///   Z     = e^{lse_A} + e^{lse_B}
///   out   = (e^{lse_A} out_A + e^{lse_B} out_B) / Z
///   lse   = log Z
///
/// computed stably around m = max(lse_A, lse_B):
///
///   w_A = e^{lse_A - m},  w_B = e^{lse_B - m}    (one of them is exactly 1)
///   out = (w_A out_A + w_B out_B) / (w_A + w_B),  lse = m + log(w_A + w_B)
///
/// so no exponential overflows whatever the magnitude of the logits, and w_A + w_B is in
/// [1, 2]. The merge is commutative and associative up to fp32 rounding, so a
/// cache can be split into any number of segments (sequence chunks on different threads,
/// pages chosen by another selector, a prefix cache shared between requests), each attended
/// separately by `dense_step` / `attend_positions` (both can output lse), and merged in any
/// order or tree shape.
///
/// An empty segment has lse = -inf (Z = 0; that is what dense_step / attend_positions return
/// for n = 0; checked_dense_step rejects S = 0, so an engine with possibly empty segments
/// calls the unchecked dense_step for them, or skips them: merging is then a no-op). Its out is ignored, even if it holds NaN: merging with it returns the other
/// state unchanged (bit for bit). Merging two empty segments gives out = 0, lse = -inf.
/// A NaN lse propagates NaN to out and lse. lse = +inf is not a valid state.
///
/// Note for SparQ: `step_result::lse` is the state of the *gathered* attention y' (before
/// mean-value reallocation). A reallocated output is not an attention state over any set of
/// positions, so merge SparQ segments with config::reallocate = false.
///
/// Allocates: never. Throws: never. Accumulation in fp32 (exp/log in fp32).

#include <cmath>
#include <cstddef>
#include <limits>

namespace sparq {

/// Merges the states (out_a, lse_a) and (out_b, lse_b) of two disjoint position sets into
/// (out, lse). out_*: [heads][d] fp32; lse_*: [heads] fp32 (natural log).
/// out may alias out_a or out_b, and lse may alias lse_a or lse_b (element-wise in place).
inline void merge_state(const float* out_a, const float* lse_a, const float* out_b,
                        const float* lse_b, std::size_t heads, std::size_t d, float* out,
                        float* lse) noexcept {
  constexpr float neg_inf = -std::numeric_limits<float>::infinity();
  for (std::size_t h = 0; h < heads; ++h) {
    const float la = lse_a[h], lb = lse_b[h];
    const float* oa = out_a + h * d;
    const float* ob = out_b + h * d;
    float* o = out + h * d;
    if (lb == neg_inf || la == neg_inf) {
      // One (or both) segments empty: the other state is the result, unchanged.
      const bool both = lb == neg_inf && la == neg_inf;
      const float* src = lb == neg_inf ? oa : ob;
      for (std::size_t i = 0; i < d; ++i) o[i] = both ? 0.0f : src[i];
      lse[h] = lb == neg_inf ? la : lb;
      continue;
    }
    const float m = la > lb ? la : lb;  // NaN: falls to lb, and NaN spreads below
    const float wa = std::exp(la - m);
    const float wb = std::exp(lb - m);
    const float z = wa + wb;
    const float inv = 1.0f / z;
    const float ca = wa * inv, cb = wb * inv;
    for (std::size_t i = 0; i < d; ++i) o[i] = ca * oa[i] + cb * ob[i];
    lse[h] = m + std::log(z);
  }
}

/// In-place variant: (out, lse) <- merge((out, lse), (out_other, lse_other)).
inline void merge_state_inplace(float* out, float* lse, const float* out_other,
                                const float* lse_other, std::size_t heads,
                                std::size_t d) noexcept {
  merge_state(out, lse, out_other, lse_other, heads, d, out, lse);
}

}  // namespace sparq
