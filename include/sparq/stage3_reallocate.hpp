#pragma once
/// \file stage3_reallocate.hpp
/// SparQ stage 3: the approximate mass each head fetched, alpha_h = sum_{s in i2} shat_h[s],
/// and the mean-value reallocation y_h = alpha_h * y'_h + (1 - alpha_h) * v_mean.
///
/// alpha is computed as (sum of the chosen unnormalised weights) / (sum of all of them); fp32
/// rounding can push that a few ulps above 1, so it is capped at 1 (the spec's 0 < alpha <= 1).
/// At the other end alpha can underflow to exactly 0 in fp32 when a head's weights on every
/// chosen position are below ~1e-38 of its peak (possible in a large GQA group with a tiny k,
/// where the group's choice ignores that head); the output is then v_mean, which is the
/// spec's formula evaluated with alpha = 0.

#include <cstddef>
#include <cstdint>

namespace sparq {

/// e: [g][ld] unnormalised approximate weights, z: [g] their sums (from softmax_group).
/// Writes alpha: [g].
inline void fetched_mass(const float* e, std::size_t g, std::size_t ld, const float* z,
                         const std::uint32_t* positions, std::size_t n, float* alpha) noexcept {
  for (std::size_t h = 0; h < g; ++h) {
    const float* eh = e + h * ld;
    float m = 0.0f;
    for (std::size_t j = 0; j < n; ++j) m += eh[positions[j]];
    const float a = m / z[h];
    alpha[h] = a < 1.0f ? a : 1.0f;
  }
}

/// y: [g][d] in/out; v_mean: [d] fp32. y_h <- alpha_h * y_h + (1 - alpha_h) * v_mean.
inline void reallocate(float* y, std::size_t g, std::size_t d, const float* alpha,
                       const float* v_mean) noexcept {
  for (std::size_t h = 0; h < g; ++h) {
    const float a = alpha[h], b = 1.0f - alpha[h];
    float* yh = y + h * d;
    for (std::size_t i = 0; i < d; ++i) yh[i] = a * yh[i] + b * v_mean[i];
  }
}

}  // namespace sparq
