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
#include "detail/size_math.hpp"
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

  // Sizes saturate at SIZE_MAX (absurd g, S or d then ask for more than any workspace).
  step_layout(std::size_t g, std::size_t S, std::size_t d, std::size_t r) noexcept {
    ld = sat_align(S, 16);
    std::size_t at = 0;
    auto take = [&](std::size_t n) {
      const std::size_t o = at;
      at = sat_add(at, sat_align(n, 64));
      return o;
    };
    const std::size_t g4 = sat_mul(g, 4);
    a = take(sat_mul(d, 4));
    order = take(sat_mul(d, 4));
    i1 = take(sat_mul(r, 4));
    qs = take(sat_mul(g4, r));
    topk = take(top_k_scratch_bytes(S > d ? S : d));
    e = take(sat_mul(g4, ld));
    mx = take(g4);
    z = take(g4);
    sel = take(sat_mul(S, 4));
    positions = take(sat_mul(S, 4));
    attend = take(sat_mul(attend_scratch_floats(g, d), 4));
    alpha = take(g4);
    lse = take(g4);
    bytes = sat_add(at, 64);  // slack for aligning the caller's base
  }
};

inline unsigned char* align64(void* p) noexcept {
  auto* b = static_cast<unsigned char*>(p);
  return b + (64 - reinterpret_cast<std::uintptr_t>(b) % 64) % 64;
}

}  // namespace detail

/// Scratch bytes for one SparQ step of a KV group of `group` query heads over at most
/// `max_length` positions of head dimension `head_dim` (SIZE_MAX if that overflows size_t).
inline std::size_t step_workspace_bytes(std::size_t group, std::size_t max_length,
                                        std::size_t head_dim, const config& cfg) noexcept {
  return detail::step_layout(group, max_length, head_dim, cfg.rank).bytes;
}

/// Scratch bytes for one dense step of `group` query heads of dimension `head_dim` (SIZE_MAX
/// if that overflows size_t).
constexpr std::size_t dense_workspace_bytes(std::size_t group, std::size_t head_dim) noexcept {
  return detail::sat_add(detail::sat_mul(attend_scratch_floats(group, head_dim), sizeof(float)),
                         64);
}

}  // namespace sparq
