#pragma once
/// \file counting_allocator.hpp
/// Memory accounting: a standard allocator that tallies live and peak bytes per arena
/// (K, Kt, V, v_mean, scratch) in a shared `allocation_stats`. (workspace_buffer.hpp has the
/// owning scratch buffer that allocates through it.)
///
///   sparq::allocation_stats stats;
///   sparq::kv_cache<sparq::f16, sparq::counting_allocator<sparq::f16>> cache(
///       1, 8, 4096, 128, /*keep_kt=*/true, sparq::counting_allocator<sparq::f16>(stats));
///   stats.live_bytes(sparq::arena::kt);  // the cost of the second K copy
///   std::puts(sparq::format_allocations(stats).c_str());
///
/// kv_cache gives each of its arrays its own arena (allocator.with_arena(a)); any other
/// container simply allocates in the arena the allocator was built with (scratch by default).
///
/// The counters are std::atomic (relaxed): allocators sharing one stats object may be used
/// from several threads. Every block is 64-byte aligned (one cache line), so cache rows and
/// Kt runs start on a line. Allocating never happens inside a step; this is for setup.

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <new>
#include <string>
#include <type_traits>
#include <utility>

#include "traffic.hpp"

namespace sparq {

/// Live, peak and cumulative bytes and block counts per arena, shared by the allocators that
/// point to it. Must outlive every allocator (and container) that points to it.
class allocation_stats {
 public:
  allocation_stats() = default;
  allocation_stats(const allocation_stats&) = delete;
  allocation_stats& operator=(const allocation_stats&) = delete;

  /// Bytes currently allocated in arena a.
  std::size_t live_bytes(arena a) const noexcept { return at(live_, a); }
  /// Largest live_bytes(a) seen since construction or reset_peak().
  std::size_t peak_bytes(arena a) const noexcept { return at(peak_, a); }
  /// Bytes ever allocated in arena a (never decreases until reset()).
  std::size_t allocated_bytes(arena a) const noexcept { return at(total_, a); }
  /// Number of allocate calls in arena a.
  std::size_t allocations(arena a) const noexcept { return at(count_, a); }
  /// Number of blocks currently live in arena a.
  std::size_t live_blocks(arena a) const noexcept { return at(blocks_, a); }

  /// Bytes currently allocated over every arena.
  std::size_t live_bytes() const noexcept { return all_live_.load(std::memory_order_relaxed); }
  /// Largest live_bytes() seen (the peak of the sum, not the sum of the peaks).
  std::size_t peak_bytes() const noexcept { return all_peak_.load(std::memory_order_relaxed); }
  /// Allocate calls over every arena.
  std::size_t allocations() const noexcept {
    std::size_t t = 0;
    for (int a = 0; a < arena_count; ++a) t += allocations(static_cast<arena>(a));
    return t;
  }

  /// Peaks restart from the current live bytes (e.g. to measure one phase).
  void reset_peak() noexcept {
    for (int a = 0; a < arena_count; ++a)
      peak_[a].store(live_[a].load(std::memory_order_relaxed), std::memory_order_relaxed);
    all_peak_.store(all_live_.load(std::memory_order_relaxed), std::memory_order_relaxed);
  }

  /// Records an allocation of `bytes` in arena a (called by the allocators).
  void on_allocate(arena a, std::size_t bytes) noexcept {
    const int i = static_cast<int>(a);
    const std::size_t now = live_[i].fetch_add(bytes, std::memory_order_relaxed) + bytes;
    raise(peak_[i], now);
    raise(all_peak_, all_live_.fetch_add(bytes, std::memory_order_relaxed) + bytes);
    total_[i].fetch_add(bytes, std::memory_order_relaxed);
    count_[i].fetch_add(1, std::memory_order_relaxed);
    blocks_[i].fetch_add(1, std::memory_order_relaxed);
  }
  /// Records the release of `bytes` from arena a.
  void on_deallocate(arena a, std::size_t bytes) noexcept {
    const int i = static_cast<int>(a);
    live_[i].fetch_sub(bytes, std::memory_order_relaxed);
    all_live_.fetch_sub(bytes, std::memory_order_relaxed);
    blocks_[i].fetch_sub(1, std::memory_order_relaxed);
  }

 private:
  using counters = std::array<std::atomic<std::size_t>, arena_count>;
  static std::size_t at(const counters& c, arena a) noexcept {
    return c[static_cast<int>(a)].load(std::memory_order_relaxed);
  }
  static void raise(std::atomic<std::size_t>& peak, std::size_t v) noexcept {
    std::size_t p = peak.load(std::memory_order_relaxed);
    while (v > p && !peak.compare_exchange_weak(p, v, std::memory_order_relaxed)) {
    }
  }

  counters live_{}, peak_{}, total_{}, count_{}, blocks_{};
  std::atomic<std::size_t> all_live_{0}, all_peak_{0};
};

/// A standard allocator (allocator_traits-complete, rebindable) that counts into an
/// allocation_stats under one arena. Copies and rebinds share the stats and keep the arena;
/// with_arena() makes a copy that counts elsewhere. Two allocators compare equal when they
/// share the stats and the arena, i.e. when one may free what the other allocated without
/// the tallies drifting. The allocator travels with the container on copy/move/swap.
template <class T>
class counting_allocator {
 public:
  using value_type = T;
  using size_type = std::size_t;
  using difference_type = std::ptrdiff_t;
  using propagate_on_container_copy_assignment = std::true_type;
  using propagate_on_container_move_assignment = std::true_type;
  using propagate_on_container_swap = std::true_type;
  using is_always_equal = std::false_type;
  template <class U>
  struct rebind {
    using other = counting_allocator<U>;
  };

  /// Every block is aligned to at least this many bytes (one cache line).
  static constexpr std::size_t alignment =
      alignof(T) > traffic_counter::line_bytes ? alignof(T) : traffic_counter::line_bytes;

  explicit counting_allocator(allocation_stats& stats, arena a = arena::scratch) noexcept
      : stats_(&stats), arena_(a) {}
  template <class U>
  counting_allocator(const counting_allocator<U>& other) noexcept  // NOLINT: implicit rebind
      : stats_(other.stats()), arena_(other.arena_of()) {}

  /// A copy that counts into arena a of the same stats.
  counting_allocator with_arena(arena a) const noexcept { return counting_allocator(*stats_, a); }

  allocation_stats* stats() const noexcept { return stats_; }
  arena arena_of() const noexcept { return arena_; }

  [[nodiscard]] T* allocate(std::size_t n) {
    if (n > std::numeric_limits<std::size_t>::max() / sizeof(T)) throw std::bad_array_new_length();
    const std::size_t bytes = n * sizeof(T);
    void* p = ::operator new(bytes, std::align_val_t{alignment});
    stats_->on_allocate(arena_, bytes);
    return static_cast<T*>(p);
  }
  void deallocate(T* p, std::size_t n) noexcept {
    stats_->on_deallocate(arena_, n * sizeof(T));
    ::operator delete(p, std::align_val_t{alignment});
  }

  template <class U>
  friend bool operator==(const counting_allocator& a, const counting_allocator<U>& b) noexcept {
    return a.stats_ == b.stats() && a.arena_ == b.arena_of();
  }
  template <class U>
  friend bool operator!=(const counting_allocator& a, const counting_allocator<U>& b) noexcept {
    return !(a == b);
  }

 private:
  allocation_stats* stats_;
  arena arena_;
};

namespace detail {
template <class A, class = void>
struct has_with_arena : std::false_type {};
template <class A>
struct has_with_arena<A, std::void_t<decltype(std::declval<const A&>().with_arena(arena::k))>>
    : std::true_type {};
}  // namespace detail

/// `alloc` rebound to U and, when it knows arenas (has with_arena), set to arena a; any other
/// allocator is just rebound.
template <class U, class Alloc>
typename std::allocator_traits<Alloc>::template rebind_alloc<U> allocator_for_arena(
    const Alloc& alloc, arena a) {
  using R = typename std::allocator_traits<Alloc>::template rebind_alloc<U>;
  if constexpr (detail::has_with_arena<R>::value)
    return R(alloc).with_arena(a);
  else
    return R(alloc);
}

/// One line of text per arena with live and peak bytes and live blocks, the totals, and the
/// KV memory with and without the second K copy (K + Kt + V against K + V).
inline std::string format_allocations(const allocation_stats& s) {
  std::string out;
  detail::append_format(out, "%-8s %14s %14s %8s\n", "arena", "live bytes", "peak bytes",
                        "blocks");
  for (int i = 0; i < arena_count; ++i) {
    const auto a = static_cast<arena>(i);
    detail::append_format(out, "%-8s %14zu %14zu %8zu\n", arena_name(a), s.live_bytes(a),
                          s.peak_bytes(a), s.live_blocks(a));
  }
  detail::append_format(out, "%-8s %14zu %14zu\n", "total", s.live_bytes(), s.peak_bytes());
  const std::size_t kv = s.live_bytes(arena::k) + s.live_bytes(arena::v);
  const std::size_t kt = s.live_bytes(arena::kt);
  if (kv != 0)
    detail::append_format(out, "KV memory: %zu bytes with Kt, %zu without (x%.3f)\n", kv + kt,
                          kv, static_cast<double>(kv + kt) / static_cast<double>(kv));
  return out;
}

}  // namespace sparq
