#pragma once
/// \file stage2_attend.hpp
/// SparQ stage 2: choose the k positions with the largest group-summed approximate weights
/// (the last l positions always included), then exact attention of the group's heads over
/// those rows only. Each gathered K and V row is read once per group.
///
/// Spec (docs/sparq-semantics.md, steps 3-4):
///   i2 = last l positions + top-(k-l) of sel over the rest (lower index wins ties);
///        every position when k >= S
///   w_h = softmax(q_h . K[s] * scale, s in i2);  y'_h = sum_{s in i2} w_h[s] V[s]

#include <cstddef>
#include <cstdint>

#include "detail/attend_kernel.hpp"
#include "topk.hpp"
#include "traffic.hpp"
#include "view.hpp"

namespace sparq {

/// Step 3. sel: [S]. Writes i2 ascending to `positions` (which must hold S entries) and
/// returns its size min(k, S). topk_scratch: top_k_scratch_bytes(S) bytes.
inline std::size_t choose_positions(const float* sel, std::size_t S, std::size_t k,
                                    std::size_t local, std::uint32_t* positions,
                                    void* topk_scratch) noexcept {
  if (k >= S) {
    for (std::size_t s = 0; s < S; ++s) positions[s] = static_cast<std::uint32_t>(s);
    return S;
  }
  // local <= k < S, so the window is a proper suffix and the rest is non-empty.
  const std::size_t rest = S - local;
  const std::size_t n = top_k(sel, rest, k - local, positions, topk_scratch);
  for (std::size_t s = rest; s < S; ++s) positions[n + (s - rest)] = static_cast<std::uint32_t>(s);
  return n + local;
}

/// Scratch floats for attend_positions / dense attention of g heads of dimension d.
constexpr std::size_t attend_scratch_floats(std::size_t g, std::size_t d) noexcept {
  return g * d + 2 * g + g * detail::attend_block;
}

/// Step 4. Exact attention of q ([g][d] fp32) over the rows listed in positions[0..n).
/// out: [g][d] fp32 (y'_h); lse: [g] log-sum-exp of the scaled logits, or nullptr.
/// scratch: attend_scratch_floats(g, d) floats. Allocates: never.
template <class T, class Traffic = no_traffic>
void attend_positions(const float* q, std::size_t g, rows_view<const T> k, rows_view<const T> v,
                      const std::uint32_t* positions, std::size_t n, float scale, float* scratch,
                      float* out, float* lse, Traffic& traffic) noexcept {
  const std::size_t d = k.dim;
  const detail::online_state st{scratch, scratch + g * d, scratch + g * d + g};
  float* p = scratch + g * d + 2 * g;
  detail::online_init(st, g, d);
  detail::dispatch_head_dim(d, [&](auto D) {
    detail::attend_online<decltype(D)::value>(q, g, d, scale, k, v,
                                              detail::indexed_positions{positions}, n, st, p,
                                              traffic);
  });
  detail::online_finish(st, g, d, out, lse);
}

template <class T>
void attend_positions(const float* q, std::size_t g, rows_view<const T> k, rows_view<const T> v,
                      const std::uint32_t* positions, std::size_t n, float scale, float* scratch,
                      float* out, float* lse = nullptr) noexcept {
  no_traffic t;
  attend_positions(q, g, k, v, positions, n, scale, scratch, out, lse, t);
}

}  // namespace sparq
