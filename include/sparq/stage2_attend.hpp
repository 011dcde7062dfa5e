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
#include "detail/size_math.hpp"
#include "topk.hpp"
#include "traffic.hpp"
#include "paged_view.hpp"
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
  return detail::sat_mul(g, detail::sat_add(d, 2 + detail::attend_block));  // SIZE_MAX: too big
}

namespace detail {
template <class Rows, class Traffic>
void attend_any(const float* q, std::size_t g, const Rows& k, const Rows& v,
                const std::uint32_t* positions, std::size_t n, float scale, float* scratch,
                float* out, float* lse, Traffic& traffic) noexcept {
  const std::size_t d = k.dim;
  const online_state st{scratch, scratch + g * d, scratch + g * d + g};
  float* p = scratch + g * d + 2 * g;
  online_init(st, g, d);
  dispatch_head_dim(d, [&](auto D) {
    attend_online<decltype(D)::value>(q, g, d, scale, k, v, indexed_positions{positions}, n, st,
                                      p, traffic);
  });
  online_finish(st, g, d, out, lse);
}
}  // namespace detail

/// Step 4. Exact attention of q ([g][d] fp32) over the rows listed in positions[0..n) (any
/// indices < S, e.g. chosen by another selector; ascending order reads memory forward).
/// k, v: rows_view<const T> or paged_rows_view<const T> (bit-identical results for the same
/// rows). out: [g][d] fp32 (y'_h); lse: [g] log-sum-exp of the scaled logits, or nullptr.
/// scratch: attend_scratch_floats(g, d) floats. Allocates: never.
template <class T, class Traffic>
void attend_positions(const float* q, std::size_t g, rows_view<const T> k, rows_view<const T> v,
                      const std::uint32_t* positions, std::size_t n, float scale, float* scratch,
                      float* out, float* lse, Traffic& traffic) noexcept {
  detail::attend_any(q, g, k, v, positions, n, scale, scratch, out, lse, traffic);
}
template <class T, class Traffic>
void attend_positions(const float* q, std::size_t g, paged_rows_view<const T> k,
                      paged_rows_view<const T> v, const std::uint32_t* positions, std::size_t n,
                      float scale, float* scratch, float* out, float* lse,
                      Traffic& traffic) noexcept {
  detail::attend_any(q, g, k, v, positions, n, scale, scratch, out, lse, traffic);
}
template <class T>
void attend_positions(const float* q, std::size_t g, rows_view<const T> k, rows_view<const T> v,
                      const std::uint32_t* positions, std::size_t n, float scale, float* scratch,
                      float* out, float* lse = nullptr) noexcept {
  no_traffic t;
  detail::attend_any(q, g, k, v, positions, n, scale, scratch, out, lse, t);
}
template <class T>
void attend_positions(const float* q, std::size_t g, paged_rows_view<const T> k,
                      paged_rows_view<const T> v, const std::uint32_t* positions, std::size_t n,
                      float scale, float* scratch, float* out, float* lse = nullptr) noexcept {
  no_traffic t;
  detail::attend_any(q, g, k, v, positions, n, scale, scratch, out, lse, t);
}

}  // namespace sparq
