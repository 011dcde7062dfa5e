#pragma once
/// \file traffic.hpp
/// Traffic policies: what the kernels tell about every K/Kt/V/v_mean access they make.
///
/// A step takes a policy by reference (template parameter). `no_traffic`, the default, has
/// empty inline members, so the calls compile to nothing. `traffic_counter` records bytes
/// read and written per stage and per arena, and the distinct 64-byte cache lines touched per
/// arena, so scattered reads are visible. The kernels report what they actually read at the
/// point where they read it; nothing is computed from a formula.

#include <array>
#include <cstddef>
#include <cstdint>
#include <unordered_set>

namespace sparq {

/// Which part of a step is running.
enum class stage : int { scores = 0, attend = 1, reallocate = 2, append = 3, dense = 4 };
inline constexpr int stage_count = 5;
/// Which tensor an access touches.
enum class arena : int { k = 0, kt = 1, v = 2, v_mean = 3, scratch = 4 };
inline constexpr int arena_count = 5;

constexpr const char* stage_name(stage s) noexcept {
  constexpr const char* names[] = {"scores", "attend", "reallocate", "append", "dense"};
  return names[static_cast<int>(s)];
}
constexpr const char* arena_name(arena a) noexcept {
  constexpr const char* names[] = {"K", "Kt", "V", "v_mean", "scratch"};
  return names[static_cast<int>(a)];
}

/// The default policy: records nothing, costs nothing.
struct no_traffic {
  static constexpr bool enabled = false;
  void begin(stage) noexcept {}
  void read(arena, const void*, std::size_t) noexcept {}
  void write(arena, const void*, std::size_t) noexcept {}
};

/// Counts bytes per (stage, arena) and distinct cache lines per arena. Not for hot loops in
/// production: it hashes every line it is told about.
class traffic_counter {
 public:
  static constexpr bool enabled = true;
  static constexpr std::size_t line_bytes = 64;

  void begin(stage s) noexcept { stage_ = s; }
  void read(arena a, const void* p, std::size_t bytes) {
    read_[idx(stage_)][idx(a)] += bytes;
    touch(a, p, bytes);
  }
  void write(arena a, const void* p, std::size_t bytes) {
    written_[idx(stage_)][idx(a)] += bytes;
    touch(a, p, bytes);
  }
  void reset() {
    *this = traffic_counter{};
  }

  std::size_t bytes_read(stage s, arena a) const noexcept { return read_[idx(s)][idx(a)]; }
  std::size_t bytes_written(stage s, arena a) const noexcept { return written_[idx(s)][idx(a)]; }
  std::size_t bytes_read(arena a) const noexcept {
    std::size_t t = 0;
    for (int s = 0; s < stage_count; ++s) t += read_[s][idx(a)];
    return t;
  }
  std::size_t bytes_written(arena a) const noexcept {
    std::size_t t = 0;
    for (int s = 0; s < stage_count; ++s) t += written_[s][idx(a)];
    return t;
  }
  std::size_t bytes_read(stage s) const noexcept {
    std::size_t t = 0;
    for (int a = 0; a < arena_count; ++a) t += read_[idx(s)][a];
    return t;
  }
  /// All bytes read and written, every stage and arena.
  std::size_t total_bytes() const noexcept {
    std::size_t t = 0;
    for (int s = 0; s < stage_count; ++s)
      for (int a = 0; a < arena_count; ++a) t += read_[s][a] + written_[s][a];
    return t;
  }
  /// Distinct 64-byte lines touched in arena a since the last reset.
  std::size_t lines_touched(arena a) const noexcept { return lines_[idx(a)].size(); }

 private:
  static constexpr int idx(stage s) noexcept { return static_cast<int>(s); }
  static constexpr int idx(arena a) noexcept { return static_cast<int>(a); }
  void touch(arena a, const void* p, std::size_t bytes) {
    if (bytes == 0) return;
    const auto first = reinterpret_cast<std::uintptr_t>(p) / line_bytes;
    const auto last = (reinterpret_cast<std::uintptr_t>(p) + bytes - 1) / line_bytes;
    for (auto l = first; l <= last; ++l) lines_[idx(a)].insert(l);
  }

  stage stage_ = stage::scores;
  std::array<std::array<std::size_t, arena_count>, stage_count> read_{};
  std::array<std::array<std::size_t, arena_count>, stage_count> written_{};
  std::array<std::unordered_set<std::uintptr_t>, arena_count> lines_{};
};

}  // namespace sparq
