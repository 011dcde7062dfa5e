#pragma once
/// \file dense.hpp
/// The dense decode-attention baseline SparQ is compared with: one query token, g heads
/// sharing one KV head, exact softmax over all S positions, online softmax so K and V are
/// each read exactly once (2*S*d elements).
///
/// Reads: S rows of K and of V. Writes: out [g][d] fp32 (and lse [g] if given).
/// Allocates: never (scratch: dense_workspace_bytes). Throws: never (see checked_dense_step).

#include <cmath>
#include <cstddef>

#include "detail/attend_kernel.hpp"
#include "step.hpp"
#include "traffic.hpp"
#include "paged_view.hpp"
#include "view.hpp"
#include "workspace.hpp"

namespace sparq {

namespace detail {
template <class Rows, class Traffic>
void dense_any(const float* q, std::size_t g, const Rows& k, const Rows& v, float scale,
               workspace ws, float* out, float* lse, Traffic& traffic) noexcept {
  const std::size_t d = k.dim;
  if (scale == 0.0f) scale = 1.0f / std::sqrt(static_cast<float>(d));
  float* scratch = reinterpret_cast<float*>(detail::align64(ws.data));
  const detail::online_state st{scratch, scratch + g * d, scratch + g * d + g};
  float* p = scratch + g * d + 2 * g;
  traffic.begin(stage::dense);
  detail::online_init(st, g, d);
  detail::dispatch_head_dim(d, [&](auto D) {
    detail::attend_online<decltype(D)::value>(q, g, d, scale, k, v,
                                              detail::contiguous_positions{}, k.length, st, p,
                                              traffic);
  });
  detail::online_finish(st, g, d, out, lse);
}
}  // namespace detail

/// q: [g][d] fp32; k, v: rows_view<const T> or paged_rows_view<const T> (bit-identical
/// results for the same rows); scale: softmax scale (0 means 1/sqrt(d)); lse: [g] natural-log
/// log-sum-exp of the scaled logits, or nullptr.
template <class T, class Traffic>
void dense_step(const float* q, std::size_t g, rows_view<const T> k, rows_view<const T> v,
                float scale, workspace ws, float* out, float* lse, Traffic& traffic) noexcept {
  detail::dense_any(q, g, k, v, scale, ws, out, lse, traffic);
}
template <class T, class Traffic>
void dense_step(const float* q, std::size_t g, paged_rows_view<const T> k,
                paged_rows_view<const T> v, float scale, workspace ws, float* out, float* lse,
                Traffic& traffic) noexcept {
  detail::dense_any(q, g, k, v, scale, ws, out, lse, traffic);
}
template <class T>
void dense_step(const float* q, std::size_t g, rows_view<const T> k, rows_view<const T> v,
                float scale, workspace ws, float* out, float* lse = nullptr) noexcept {
  no_traffic t;
  detail::dense_any(q, g, k, v, scale, ws, out, lse, t);
}
template <class T>
void dense_step(const float* q, std::size_t g, paged_rows_view<const T> k,
                paged_rows_view<const T> v, float scale, workspace ws, float* out,
                float* lse = nullptr) noexcept {
  no_traffic t;
  detail::dense_any(q, g, k, v, scale, ws, out, lse, t);
}

namespace detail {
template <class Rows>
void checked_dense_any(const float* q, std::size_t g, const Rows& k, const Rows& v, float scale,
                       workspace ws, float* out, float* lse) {
  check_common(q, g, out, k.length, k.dim);
  check_view(k, "k", k.length, k.dim);
  check_view(v, "v", k.length, k.dim);
  if (!std::isfinite(scale) || scale < 0.0f)
    fail("scale = ", scale, "; allowed: a finite value > 0, or 0 for 1/sqrt(d)");
  const std::size_t need = dense_workspace_bytes(g, k.dim);
  if (ws.data == nullptr || ws.bytes < need)
    fail("workspace.bytes = ", ws.bytes, "; need >= ", need, " (dense_workspace_bytes(g, d))");
  no_traffic t;
  dense_any(q, g, k, v, scale, ws, out, lse, t);
}
}  // namespace detail

/// dense_step with every precondition checked; throws sparq::error naming the bad argument.
template <class T>
void checked_dense_step(const float* q, std::size_t g, rows_view<const T> k, rows_view<const T> v,
                        float scale, workspace ws, float* out, float* lse = nullptr) {
  detail::checked_dense_any(q, g, k, v, scale, ws, out, lse);
}
template <class T>
void checked_dense_step(const float* q, std::size_t g, paged_rows_view<const T> k,
                        paged_rows_view<const T> v, float scale, workspace ws, float* out,
                        float* lse = nullptr) {
  detail::checked_dense_any(q, g, k, v, scale, ws, out, lse);
}

}  // namespace sparq
