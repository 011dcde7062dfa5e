#pragma once
/// \file aligned_allocator.hpp
/// sparq::aligned_allocator<T, Align>: a stateless standard allocator whose blocks start on
/// an Align-byte boundary (default 64: one cache line). kv_cache and paged_kv_cache use it by
/// default, so a K or V row whose size is a multiple of 64 bytes (d = 128 at f16/bf16: 256
/// bytes) covers whole cache lines and a gathered row costs 4 line fills, not 5.
/// std::allocator gives large blocks 16 bytes past a page boundary (glibc), which put every
/// row across one extra line and every 64-byte vector load across two lines.

#include <cstddef>
#include <limits>
#include <new>

namespace sparq {

template <class T, std::size_t Align = 64>
struct aligned_allocator {
  static_assert(Align != 0 && (Align & (Align - 1)) == 0,
                "aligned_allocator<T, Align>: Align must be a power of two");
  static_assert(Align >= alignof(T), "aligned_allocator<T, Align>: Align must be >= alignof(T)");
  using value_type = T;
  /// The alignment of every block, in bytes.
  static constexpr std::size_t alignment = Align;
  template <class U>
  struct rebind {
    using other = aligned_allocator<U, Align>;
  };

  aligned_allocator() noexcept = default;
  template <class U>
  aligned_allocator(const aligned_allocator<U, Align>&) noexcept {}

  [[nodiscard]] T* allocate(std::size_t n) {
    if (n > std::numeric_limits<std::size_t>::max() / sizeof(T)) throw std::bad_array_new_length();
    return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t{Align}));
  }
  void deallocate(T* p, std::size_t) noexcept { ::operator delete(p, std::align_val_t{Align}); }

  template <class U>
  bool operator==(const aligned_allocator<U, Align>&) const noexcept {
    return true;
  }
  template <class U>
  bool operator!=(const aligned_allocator<U, Align>&) const noexcept {
    return false;
  }
};

}  // namespace sparq
