// sparq::aligned_allocator (aligned_allocator.hpp) and the alignment of the owning caches'
// storage: every block starts on its Align boundary (64 by default, also 4096) for sizes from
// one element to well past the point where malloc switches to mmap (where glibc hands out
// page + 16 bytes); rebind keeps Align; allocators compare equal. kv_cache and paged_kv_cache
// built with the default allocator start K, Kt, V and v_mean on a 64-byte line (before the
// default changed, all four sat 16 bytes past one).

#include "test_util.hpp"

#include <sparq/aligned_allocator.hpp>
#include <sparq/kv_cache.hpp>
#include <sparq/paged_kv_cache.hpp>

#include <cstdint>
#include <limits>
#include <new>
#include <type_traits>
#include <vector>

namespace {

std::uintptr_t misalign(const void* p, std::size_t a) {
  return reinterpret_cast<std::uintptr_t>(p) % a;
}

template <std::size_t A, class T>
void check_blocks() {
  sparq::aligned_allocator<T, A> al;
  for (std::size_t n : {std::size_t{1}, std::size_t{3}, std::size_t{1000}, std::size_t{1} << 16,
                        std::size_t{1} << 20}) {
    T* p = al.allocate(n);
    EXPECT_EQ(misalign(p, A), 0u) << "n = " << n << ", Align = " << A;
    p[0] = T{};
    p[n - 1] = T{};
    al.deallocate(p, n);
  }
}

TEST(aligned_allocator, BlocksStartOnTheBoundary) {
  check_blocks<64, float>();
  check_blocks<64, sparq::f16>();
  check_blocks<64, double>();
  check_blocks<4096, std::uint32_t>();
}

TEST(aligned_allocator, RebindKeepsTheAlignmentAndCopiesCompareEqual) {
  using A = sparq::aligned_allocator<sparq::f16, 128>;
  using R = std::allocator_traits<A>::rebind_alloc<float>;
  static_assert(std::is_same_v<R, sparq::aligned_allocator<float, 128>>);
  static_assert(R::alignment == 128);
  static_assert(std::is_empty_v<A>);
  const A a;
  const R r(a);
  EXPECT_TRUE(a == r);
  EXPECT_FALSE(a != r);
  std::vector<float, R> v(100000, 1.0f);
  EXPECT_EQ(misalign(v.data(), 128), 0u);
}

TEST(aligned_allocator, TooLargeThrows) {
  sparq::aligned_allocator<float> al;
  EXPECT_THROW((void)al.allocate(std::numeric_limits<std::size_t>::max() / 2),
               std::bad_array_new_length);
}

// Large enough that std::allocator would take the mmap path (page + 16 bytes).
TEST(aligned_allocator, CachesStartEveryArrayOnALine) {
  sparq::kv_cache<sparq::f16> c(2, 4, 4096, 128);
  static_assert(std::is_same_v<decltype(c.get_allocator()), sparq::aligned_allocator<sparq::f16>>);
  const auto h = c.head(0, 0);
  EXPECT_EQ(misalign(h.k.data, 64), 0u);
  EXPECT_EQ(misalign(h.kt.data, 64), 0u);
  EXPECT_EQ(misalign(h.v.data, 64), 0u);
  EXPECT_EQ(misalign(h.v_mean, 64), 0u);
  // d = 128 at f16: every row of every head is a whole number of lines.
  const auto h2 = c.head(1, 3);
  EXPECT_EQ(misalign(h2.k.row(17), 64), 0u);
  EXPECT_EQ(misalign(h2.v.row(4095), 64), 0u);

  sparq::paged_kv_cache<float> pc(2, 4, 512, 16, 64);
  const auto pool = pc.pool();
  EXPECT_EQ(misalign(pool.k, 64), 0u);
  EXPECT_EQ(misalign(pool.v, 64), 0u);
  EXPECT_EQ(misalign(pool.kt, 64), 0u);
}

}  // namespace
