#pragma once
/// \file step.hpp
/// One SparQ decode step for one KV group: the three stages composed.
///
///   stage 1  i1, approximate logits from r rows of Kt, softmax per head, group sum  (scores)
///   stage 2  i2 = local window + top-k, exact attention over those K/V rows          (attend)
///   stage 3  alpha_h and the mean-value reallocation                               (reallocate)
///
/// When k >= S every position is chosen: the step is exact dense attention, alpha = 1, and
/// stage 1 is skipped (it could not change the result).
///
/// Reads: S*r elements of Kt, min(k,S) rows of K and of V, d floats of v_mean (reallocating).
/// Writes: out [g][d] fp32. Allocates: never. Throws: never (see checked_step).
/// kv: a kv_head_view<const T> (contiguous, view.hpp) or a paged_kv_head_view<const T>
/// (block table, paged_view.hpp); the same cached values give bit-identical results.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>

#include "config.hpp"
#include "error.hpp"
#include "stage1_scores.hpp"
#include "stage2_attend.hpp"
#include "stage3_reallocate.hpp"
#include "traffic.hpp"
#include "paged_view.hpp"
#include "view.hpp"
#include "workspace.hpp"

namespace sparq {

/// What a step chose. The arrays live in the workspace and stay valid until it is reused.
struct step_result {
  const std::uint32_t* positions = nullptr;  ///< i2, ascending
  std::size_t n_positions = 0;               ///< min(k, S)
  const std::uint32_t* components = nullptr; ///< i1, ascending (nullptr when k >= S)
  std::size_t n_components = 0;              ///< r (0 when k >= S)
  const float* alpha = nullptr;              ///< [g] fetched approximate mass per head
  /// [g] natural-log log-sum-exp of the exact scaled logits over i2 (before reallocation);
  /// with out, the mergeable state of this segment (see merge.hpp).
  const float* lse = nullptr;
};

/// q: [group][d] fp32, the query heads that share this KV head; out: [group][d] fp32.
/// Preconditions (not checked here; checked_step checks them): cfg valid for d, S >= 1,
/// ws.bytes >= step_workspace_bytes(group, S, d, cfg), views consistent.
namespace detail {
template <class KV, class Traffic>
step_result step_any(const float* q, std::size_t group, const KV& kv, const config& cfg,
                     workspace ws, float* out, Traffic& traffic) noexcept {
  const std::size_t g = group, S = kv.length(), d = kv.dim(), r = cfg.rank;
  const float scale = cfg.scale_for(d);
  const detail::step_layout L(g, S, d, r);
  unsigned char* base = detail::align64(ws.data);
  auto f32 = [&](std::size_t off) { return reinterpret_cast<float*>(base + off); };
  auto u32 = [&](std::size_t off) { return reinterpret_cast<std::uint32_t*>(base + off); };
  std::uint32_t* positions = u32(L.positions);
  float* alpha = f32(L.alpha);
  float* lse = f32(L.lse);

  if (cfg.top_k >= S) {  // every position: no stage 1; the selection is 0..S-1
    traffic.begin(stage::select);
    for (std::size_t s = 0; s < S; ++s) positions[s] = static_cast<std::uint32_t>(s);
    traffic.begin(stage::attend);
    attend_positions(q, g, kv.k, kv.v, positions, S, scale, f32(L.attend), out, lse, traffic);
    for (std::size_t h = 0; h < g; ++h) alpha[h] = 1.0f;
    return {positions, S, nullptr, 0, alpha, lse};
  }

  // Stage 1: components, approximate logits, per-head softmax and the group sum.
  traffic.begin(stage::scores);
  std::uint32_t* i1 = u32(L.i1);
  float* e = f32(L.e);
  float* mx = f32(L.mx);
  float* z = f32(L.z);
  float* sel = f32(L.sel);
  choose_components(q, g, d, r, f32(L.a), u32(L.order), base + L.topk, i1);
  scaled_query_components(q, g, d, i1, r, scale, f32(L.qs));
  for (std::size_t h = 0; h < g; ++h) mx[h] = -std::numeric_limits<float>::infinity();
  approximate_logits(f32(L.qs), g, r, kv.kt, i1, 0, S, e, L.ld, mx, traffic);
  softmax_group(e, g, S, L.ld, mx, z, sel);

  // Stage 2: positions, then exact attention over them.
  traffic.begin(stage::select);
  const std::size_t n = choose_positions(sel, S, cfg.top_k, cfg.local, positions, base + L.topk);
  traffic.begin(stage::attend);
  attend_positions(q, g, kv.k, kv.v, positions, n, scale, f32(L.attend), out, lse, traffic);

  // Stage 3: fetched mass and reallocation.
  traffic.begin(stage::reallocate);
  fetched_mass(e, g, L.ld, z, positions, n, alpha);
  if (cfg.reallocate) {
    traffic.read(arena::v_mean, kv.v_mean, d * sizeof(float));
    reallocate(out, g, d, alpha, kv.v_mean);
  }
  return {positions, n, i1, r, alpha, lse};
}

}  // namespace detail

template <class T, class Traffic>
step_result step(const float* q, std::size_t group, kv_head_view<const T> kv, const config& cfg,
                 workspace ws, float* out, Traffic& traffic) noexcept {
  return detail::step_any(q, group, kv, cfg, ws, out, traffic);
}
template <class T, class Traffic>
step_result step(const float* q, std::size_t group, paged_kv_head_view<const T> kv,
                 const config& cfg, workspace ws, float* out, Traffic& traffic) noexcept {
  return detail::step_any(q, group, kv, cfg, ws, out, traffic);
}
template <class T>
step_result step(const float* q, std::size_t group, kv_head_view<const T> kv, const config& cfg,
                 workspace ws, float* out) noexcept {
  no_traffic t;
  return detail::step_any(q, group, kv, cfg, ws, out, t);
}
template <class T>
step_result step(const float* q, std::size_t group, paged_kv_head_view<const T> kv,
                 const config& cfg, workspace ws, float* out) noexcept {
  no_traffic t;
  return detail::step_any(q, group, kv, cfg, ws, out, t);
}

namespace detail {
inline void check_common(const float* q, std::size_t group, const float* out, std::size_t S,
                         std::size_t d) {
  // Sizes first: a zero group often comes with an empty (null) q.
  if (group == 0) fail("group = 0; allowed: group >= 1 (query heads per KV head)");
  if (d == 0) fail("k.dim = 0; allowed: head_dim >= 1");
  if (S == 0) fail("k.length = 0; allowed: at least one cached position");
  if (S > max_positions)
    fail("k.length = ", S, "; allowed: <= max_positions (", max_positions,
         ": positions are 32-bit)");
  if (q == nullptr) fail("q is null");
  if (out == nullptr) fail("out is null");
}

template <class KV, class Traffic>
step_result checked_step_any(const float* q, std::size_t group, const KV& kv, const config& cfg,
                             workspace ws, float* out, Traffic& traffic) {
  const std::size_t S = kv.length(), d = kv.dim();
  detail::check_common(q, group, out, S, d);
  cfg.validate(d);
  detail::check_view(kv.k, "k", S, d);
  detail::check_view(kv.v, "v", S, d);
  if (cfg.top_k < S) {
    detail::check_view(kv.kt, "kt", S, d);
    if (cfg.reallocate && kv.v_mean == nullptr)
      detail::fail("v_mean is null but config.reallocate is on");
  }
  const std::size_t need = step_workspace_bytes(group, S, d, cfg);
  if (ws.data == nullptr || ws.bytes < need)
    detail::fail("workspace.bytes = ", ws.bytes, "; need >= ", need,
                 " (step_workspace_bytes(group, S, d, cfg))");
  return step_any(q, group, kv, cfg, ws, out, traffic);
}
}  // namespace detail

/// step() with every precondition checked; throws sparq::error naming the bad argument.
template <class T, class Traffic>
step_result checked_step(const float* q, std::size_t group, kv_head_view<const T> kv,
                         const config& cfg, workspace ws, float* out, Traffic& traffic) {
  return detail::checked_step_any(q, group, kv, cfg, ws, out, traffic);
}
template <class T, class Traffic>
step_result checked_step(const float* q, std::size_t group, paged_kv_head_view<const T> kv,
                         const config& cfg, workspace ws, float* out, Traffic& traffic) {
  return detail::checked_step_any(q, group, kv, cfg, ws, out, traffic);
}
template <class T>
step_result checked_step(const float* q, std::size_t group, kv_head_view<const T> kv,
                         const config& cfg, workspace ws, float* out) {
  no_traffic t;
  return detail::checked_step_any(q, group, kv, cfg, ws, out, t);
}
template <class T>
step_result checked_step(const float* q, std::size_t group, paged_kv_head_view<const T> kv,
                         const config& cfg, workspace ws, float* out) {
  no_traffic t;
  return detail::checked_step_any(q, group, kv, cfg, ws, out, t);
}

}  // namespace sparq
