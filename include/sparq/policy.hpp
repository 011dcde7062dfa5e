#pragma once
/// \file policy.hpp
/// A per-call decode policy for sequences of different lengths: k given as a fraction of S
/// (clamped to [top_k_min, top_k_max]), the local window as a fraction of k, and a length
/// below which a sequence uses dense attention because SparQ cannot win there.
///
///   sparq::decode_policy p;            // r = 16, k = S/16 in [64, inf), l = k/4
///   p.dense_below = 2048;              // short sequences: dense
///   if (p.use_dense(S)) dense_step(...); else step(..., p.resolve(S), ...);

#include <cmath>
#include <cstddef>
#include <limits>

#include "config.hpp"
#include "error.hpp"

namespace sparq {

struct decode_policy {
  std::size_t rank = 16;              ///< r, as in config
  double top_k_fraction = 1.0 / 16;   ///< k = round(fraction * S) when > 0 ...
  std::size_t top_k = 128;            ///< ... else this fixed k
  std::size_t top_k_min = 64;         ///< lower clamp of k
  std::size_t top_k_max = std::numeric_limits<std::size_t>::max();  ///< upper clamp of k
  double local_fraction = 0.25;       ///< l = floor(local_fraction * k)
  bool reallocate = true;
  float scale = 0.0f;                 ///< 0 means 1/sqrt(d)
  /// S < dense_below: use dense attention. Default 0 because SparQ is faster wherever it
  /// differs from dense: measured 2026-11-23 on the 2-vCPU EPYC dev VM with
  /// `sparq-bench-kernels --benchmark_filter='step/.*/f16/gqa32x8/B1/S1024'` (one thread,
  /// 32q/8kv, d 128, f16, r 16, k 64): SparQ 58 us vs dense 231 us CPU time; and for
  /// S <= top_k_min the step is exact dense attention anyway. Raise it for accuracy, not speed.
  std::size_t dense_below = 0;

  /// True when a sequence of length S should use the dense step.
  bool use_dense(std::size_t S) const noexcept { return S < dense_below; }

  /// The config for a sequence of length S (S >= 1). k >= S means the step is dense-exact.
  config resolve(std::size_t S) const noexcept {
    config c;
    c.rank = rank;
    std::size_t k = top_k;
    if (top_k_fraction > 0.0)
      k = static_cast<std::size_t>(std::llround(top_k_fraction * static_cast<double>(S)));
    if (k < top_k_min) k = top_k_min;
    if (k > top_k_max) k = top_k_max;
    if (k < 1) k = 1;
    c.top_k = k;
    c.local = static_cast<std::size_t>(local_fraction * static_cast<double>(k));
    if (c.local > k) c.local = k;
    c.reallocate = reallocate;
    c.scale = scale;
    return c;
  }

  /// Throws sparq::error naming the offending field.
  void validate(std::size_t head_dim) const {
    if (!(top_k_fraction >= 0.0 && top_k_fraction <= 1.0))
      detail::fail("decode_policy.top_k_fraction = ", top_k_fraction, "; allowed: 0 (use top_k) .. 1");
    if (top_k_fraction == 0.0 && top_k < 1)
      detail::fail("decode_policy.top_k = 0; allowed: >= 1");
    if (top_k_min > top_k_max)
      detail::fail("decode_policy.top_k_min = ", top_k_min, " > top_k_max = ", top_k_max);
    if (!(local_fraction >= 0.0 && local_fraction <= 1.0))
      detail::fail("decode_policy.local_fraction = ", local_fraction, "; allowed: 0 .. 1");
    config c = resolve(1);
    c.validate(head_dim);
  }
};

}  // namespace sparq
