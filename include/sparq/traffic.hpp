#pragma once
/// \file traffic.hpp
/// Traffic policies: what the kernels tell about every K/Kt/V/v_mean access they make.
///
/// A step takes a policy by reference (template parameter). `no_traffic`, the default, has
/// empty inline members, so the calls compile to nothing. `traffic_counter` records bytes
/// read and written per stage and per arena, and the distinct 64-byte cache lines touched per
/// arena (in total and per stage), so scattered reads are visible. The kernels report what
/// they actually read at the point where they read it; nothing is computed from a formula.
///
/// The unit is memory traffic, not load instructions: a kernel reports a K row once per KV
/// group even when its g query heads each load the row from L1 (GQA sharing), and the
/// scratch workspace is not reported by the kernels (the spec counts what a step reads of
/// the cache). At long S that scratch is not small: a SparQ item writes and reads back g + 1
/// fp32 per position (stage 1's exponentials and the group sum), e.g. 1.25 MiB at S = 64k,
/// g = 4, which mostly stays in the last-level cache.
///
/// What a step reports, per KV head (T = storage type, n = min(k, S)):
///   stage    arena    bytes
///   scores   Kt       S*r*sizeof(T)        (r runs of Kt; skipped when k >= S)
///   select   -        nothing              (choosing the positions reads only scratch)
///   attend   K, V     n*d*sizeof(T) each   (gathered rows; all S rows when k >= S)
///   realloc  v_mean   d*4 read             (when reallocating and k < S)
///   dense    K, V     S*d*sizeof(T) each
///   append   K, V     d*sizeof(T) written each; Kt d*sizeof(T) written (d single elements,
///                     one per Kt row, so d distinct lines); v_mean d*4 read + d*4 written.

#include <array>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <unordered_set>

namespace sparq {

/// Which part of a step is running.
/// A SparQ step begins scores, select (choosing the positions; no K/Kt/V reads), attend,
/// reallocate, in that order per KV head; a dense step begins dense. A policy may use the
/// begin() calls as phase marks (bench/prof_phases.cpp times them).
enum class stage : int { scores = 0, attend = 1, reallocate = 2, append = 3, dense = 4, select = 5 };
inline constexpr int stage_count = 6;
/// Which tensor an access touches (also the arenas of counting_allocator).
enum class arena : int { k = 0, kt = 1, v = 2, v_mean = 3, scratch = 4 };
inline constexpr int arena_count = 5;

constexpr const char* stage_name(stage s) noexcept {
  constexpr const char* names[] = {"scores", "attend", "reallocate", "append", "dense",
                                   "select"};
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

/// Counts bytes per (stage, arena) and distinct 64-byte lines per arena and per
/// (stage, arena). Not for hot loops in production: it hashes every line it is told about,
/// and it allocates (the line sets). Not thread-safe: use one counter per thread.
class traffic_counter {
 public:
  static constexpr bool enabled = true;
  static constexpr std::size_t line_bytes = 64;

  /// Accesses reported from now on belong to stage s.
  void begin(stage s) noexcept { stage_ = s; }
  void read(arena a, const void* p, std::size_t bytes) {
    read_[idx(stage_)][idx(a)] += bytes;
    touch(a, p, bytes);
  }
  void write(arena a, const void* p, std::size_t bytes) {
    written_[idx(stage_)][idx(a)] += bytes;
    touch(a, p, bytes);
  }
  void reset() { *this = traffic_counter{}; }

  /// The stage accesses are currently attributed to.
  stage current_stage() const noexcept { return stage_; }

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
  std::size_t bytes_written(stage s) const noexcept {
    std::size_t t = 0;
    for (int a = 0; a < arena_count; ++a) t += written_[idx(s)][a];
    return t;
  }
  /// All bytes read, every stage and arena.
  std::size_t bytes_read() const noexcept {
    std::size_t t = 0;
    for (int s = 0; s < stage_count; ++s) t += bytes_read(static_cast<stage>(s));
    return t;
  }
  /// All bytes written, every stage and arena.
  std::size_t bytes_written() const noexcept {
    std::size_t t = 0;
    for (int s = 0; s < stage_count; ++s) t += bytes_written(static_cast<stage>(s));
    return t;
  }
  /// All bytes read and written, every stage and arena.
  std::size_t total_bytes() const noexcept { return bytes_read() + bytes_written(); }

  /// Distinct 64-byte lines touched (read or written) in arena a since the last reset.
  std::size_t lines_touched(arena a) const noexcept { return lines_[idx(a)].size(); }
  /// Distinct 64-byte lines touched in arena a during stage s (a line touched in two stages
  /// counts in both; lines_touched(a) counts it once).
  std::size_t lines_touched(stage s, arena a) const noexcept {
    return stage_lines_[idx(s)][idx(a)].size();
  }
  /// Distinct lines over every arena.
  std::size_t lines_touched() const noexcept {
    std::size_t t = 0;
    for (int a = 0; a < arena_count; ++a) t += lines_[a].size();
    return t;
  }

 private:
  static constexpr int idx(stage s) noexcept { return static_cast<int>(s); }
  static constexpr int idx(arena a) noexcept { return static_cast<int>(a); }
  void touch(arena a, const void* p, std::size_t bytes) {
    if (bytes == 0) return;
    const auto first = reinterpret_cast<std::uintptr_t>(p) / line_bytes;
    const auto last = (reinterpret_cast<std::uintptr_t>(p) + bytes - 1) / line_bytes;
    auto& all = lines_[idx(a)];
    auto& mine = stage_lines_[idx(stage_)][idx(a)];
    for (auto l = first; l <= last; ++l) {
      all.insert(l);
      mine.insert(l);
    }
  }

  stage stage_ = stage::scores;
  std::array<std::array<std::size_t, arena_count>, stage_count> read_{};
  std::array<std::array<std::size_t, arena_count>, stage_count> written_{};
  std::array<std::unordered_set<std::uintptr_t>, arena_count> lines_{};
  std::array<std::array<std::unordered_set<std::uintptr_t>, arena_count>, stage_count>
      stage_lines_{};
};

namespace detail {
inline void append_format(std::string& out, const char* fmt, ...) {
  char buf[256];
  va_list ap;
  va_start(ap, fmt);
  const int n = std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (n > 0)
    out.append(buf, static_cast<std::size_t>(n) < sizeof buf ? static_cast<std::size_t>(n)
                                                             : sizeof buf - 1);
}
}  // namespace detail

/// A per-stage x per-arena table of what `t` counted: one row per stage that saw traffic,
/// bytes per arena ("123" read, "45w" written, "123+45w" both), row and column totals, and
/// the distinct 64-byte lines per arena. Plain text, columns aligned, ends with a newline.
inline std::string format_traffic(const traffic_counter& t) {
  std::string out;
  auto cell = [&](std::size_t r, std::size_t w) {
    char b[48];
    if (r == 0 && w == 0)
      std::snprintf(b, sizeof b, "%s", "-");
    else if (w == 0)
      std::snprintf(b, sizeof b, "%zu", r);
    else if (r == 0)
      std::snprintf(b, sizeof b, "%zuw", w);
    else
      std::snprintf(b, sizeof b, "%zu+%zuw", r, w);
    detail::append_format(out, " %16s", b);
  };
  detail::append_format(out, "%-11s", "bytes");
  for (int a = 0; a < arena_count; ++a)
    detail::append_format(out, " %16s", arena_name(static_cast<arena>(a)));
  detail::append_format(out, " %16s\n", "total");
  for (int si = 0; si < stage_count; ++si) {
    const auto s = static_cast<stage>(si);
    if (t.bytes_read(s) + t.bytes_written(s) == 0) continue;
    detail::append_format(out, "%-11s", stage_name(s));
    for (int a = 0; a < arena_count; ++a)
      cell(t.bytes_read(s, static_cast<arena>(a)), t.bytes_written(s, static_cast<arena>(a)));
    cell(t.bytes_read(s), t.bytes_written(s));
    out += '\n';
  }
  detail::append_format(out, "%-11s", "total");
  for (int a = 0; a < arena_count; ++a)
    cell(t.bytes_read(static_cast<arena>(a)), t.bytes_written(static_cast<arena>(a)));
  cell(t.bytes_read(), t.bytes_written());
  out += '\n';
  detail::append_format(out, "%-11s", "lines(64B)");
  for (int a = 0; a < arena_count; ++a)
    detail::append_format(out, " %16zu", t.lines_touched(static_cast<arena>(a)));
  detail::append_format(out, " %16zu\n", t.lines_touched());
  return out;
}

/// format_traffic(t) followed by the comparison with a baseline (normally the dense step over
/// the same cache): bytes read and read+written by each, and the ratio t / baseline as "1/x".
inline std::string format_traffic(const traffic_counter& t, const traffic_counter& baseline) {
  std::string out = format_traffic(t);
  auto ratio = [&](std::size_t a, std::size_t b) {
    if (a == 0 || b == 0) {
      detail::append_format(out, "n/a\n");
      return;
    }
    const double x = static_cast<double>(a) / static_cast<double>(b);
    detail::append_format(out, "%.4f (1/%.2f)\n", x, 1.0 / x);
  };
  detail::append_format(out, "bytes read: %zu vs baseline %zu, ratio ", t.bytes_read(),
                        baseline.bytes_read());
  ratio(t.bytes_read(), baseline.bytes_read());
  detail::append_format(out, "bytes read+written: %zu vs baseline %zu, ratio ", t.total_bytes(),
                        baseline.total_bytes());
  ratio(t.total_bytes(), baseline.total_bytes());
  detail::append_format(out, "lines touched: %zu vs baseline %zu, ratio ", t.lines_touched(),
                        baseline.lines_touched());
  ratio(t.lines_touched(), baseline.lines_touched());
  return out;
}

}  // namespace sparq
