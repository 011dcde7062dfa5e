#pragma once
/// \file config.hpp
/// The runtime settings of a SparQ step (r, k, l, reallocate, scale) and their validation.

#include <cmath>
#include <cstddef>

#include "error.hpp"

namespace sparq {

/// The most positions a sequence may hold: a step keeps positions as 32-bit indices. The
/// caches, batch_step and checked_step reject longer ones with sparq::error.
inline constexpr std::size_t max_positions = 0xffffffffu;

struct config {
  std::size_t rank = 16;    ///< r: query components used for approximate scores, 1 <= r <= d
  std::size_t top_k = 128;  ///< k: positions gathered for exact attention, k >= 1
  std::size_t local = 32;   ///< l: most recent positions always gathered, 0 <= l <= k
  bool reallocate = true;   ///< blend with the running mean of V by the fetched mass alpha
  float scale = 0.0f;       ///< softmax scale; 0 means 1/sqrt(d)

  /// The scale actually used for head dimension `head_dim`.
  float scale_for(std::size_t head_dim) const noexcept {
    return scale != 0.0f ? scale : 1.0f / std::sqrt(static_cast<float>(head_dim));
  }

  /// Throws sparq::error naming the offending field and its allowed range.
  void validate(std::size_t head_dim) const {
    if (head_dim == 0) detail::fail("head_dim = 0; allowed: head_dim >= 1");
    if (rank < 1 || rank > head_dim)
      detail::fail("config.rank = ", rank, "; allowed: 1 <= rank <= head_dim (", head_dim, ")");
    if (top_k < 1) detail::fail("config.top_k = 0; allowed: top_k >= 1");
    if (local > top_k)
      detail::fail("config.local = ", local, "; allowed: 0 <= local <= top_k (", top_k, ")");
    if (!std::isfinite(scale) || scale < 0.0f)
      detail::fail("config.scale = ", scale, "; allowed: a finite value > 0, or 0 for 1/sqrt(d)");
  }
};

}  // namespace sparq
