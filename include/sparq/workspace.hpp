#pragma once
/// \file workspace.hpp
/// Plan, then carve: pure functions say how many scratch bytes a step needs; the caller owns
/// the buffer (any alignment: carving aligns each piece to 64 bytes); a step never allocates.
///
///   std::vector<std::byte> buf(sparq::step_workspace_bytes(group, capacity, d, cfg));
///   sparq::workspace ws{buf.data(), buf.size()};
///
/// A workspace sized for a capacity serves every step with S <= capacity.

#include <cstddef>
#include <cstdint>

#include "config.hpp"
#include "stage2_attend.hpp"
#include "topk.hpp"

namespace sparq {

/// Caller-owned scratch memory (non-owning).
struct workspace {
  void* data = nullptr;
  std::size_t bytes = 0;
};

namespace detail {

/// Where each scratch array of a SparQ step lives (byte offsets from a 64-byte aligned base).
struct step_layout {
  std::size_t ld = 0;  // row stride of e, in floats
  std::size_t a = 0, order = 0, i1 = 0, qs = 0, topk = 0, e = 0, mx = 0, z = 0, sel = 0,
              positions = 0, attend = 0, alpha = 0, lse = 0, bytes = 0;

  step_layout(std::size_t g, std::size_t S, std::size_t d, std::size_t r) noexcept {
    ld = align_up(S, 16);
    std::size_t at = 0;
    auto take = [&](std::size_t n) {
      const std::size_t o = at;
      at += align_up(n, 64);
      return o;
    };
    a = take(d * 4);
    order = take(d * 4);
    i1 = take(r * 4);
    qs = take(g * r * 4);
    topk = take(top_k_scratch_bytes(S > d ? S : d));
    e = take(g * ld * 4);
    mx = take(g * 4);
    z = take(g * 4);
    sel = take(S * 4);
    positions = take(S * 4);
    attend = take(attend_scratch_floats(g, d) * 4);
    alpha = take(g * 4);
    lse = take(g * 4);
    bytes = at + 64;  // slack for aligning the caller's base
  }
};

inline unsigned char* align64(void* p) noexcept {
  auto* b = static_cast<unsigned char*>(p);
  return b + (64 - reinterpret_cast<std::uintptr_t>(b) % 64) % 64;
}

}  // namespace detail

/// Scratch bytes for one SparQ step of a KV group of `group` query heads over at most
/// `max_length` positions of head dimension `head_dim`.
inline std::size_t step_workspace_bytes(std::size_t group, std::size_t max_length,
                                        std::size_t head_dim, const config& cfg) noexcept {
  return detail::step_layout(group, max_length, head_dim, cfg.rank).bytes;
}

/// Scratch bytes for one dense step of `group` query heads of dimension `head_dim`.
constexpr std::size_t dense_workspace_bytes(std::size_t group, std::size_t head_dim) noexcept {
  return attend_scratch_floats(group, head_dim) * sizeof(float) + 64;
}

}  // namespace sparq
