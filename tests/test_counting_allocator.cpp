// counting_allocator, allocation_stats, workspace_buffer, the kv_cache arenas, and that a
// decode step (SparQ or dense) never touches the heap, checked with a global operator-new
// counter that lives here in the test, not in the library.

#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <list>
#include <map>
#include <new>
#include <random>
#include <thread>
#include <vector>

#include "sparq/counting_allocator.hpp"
#include "sparq/workspace_buffer.hpp"
#include "sparq/sparq.hpp"

#include "heap_counter.hpp"

namespace {

using sparq::arena;

TEST(alloc_heap_watch, SeesAnAllocation) {
  heap_watch w;
  auto* p = new std::vector<int>(100);
  delete p;
  EXPECT_EQ(w.news(), 2u);  // the vector object and its buffer
}

// ---------------------------------------------------------------------------------------------
// The allocator itself.

TEST(alloc_counting_allocator, SatisfiesAllocatorTraits) {
  sparq::allocation_stats s;
  using A = sparq::counting_allocator<float>;
  using Tr = std::allocator_traits<A>;
  static_assert(std::is_same_v<Tr::value_type, float>);
  static_assert(std::is_same_v<Tr::rebind_alloc<int>, sparq::counting_allocator<int>>);
  static_assert(Tr::propagate_on_container_move_assignment::value);
  static_assert(!Tr::is_always_equal::value);
  static_assert(std::is_nothrow_copy_constructible_v<A>);
  A a(s, arena::k);
  float* p = Tr::allocate(a, 10);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(p) % 64, 0u);
  EXPECT_EQ(s.live_bytes(arena::k), 40u);
  EXPECT_EQ(s.live_blocks(arena::k), 1u);
  Tr::deallocate(a, p, 10);
  EXPECT_EQ(s.live_bytes(arena::k), 0u);
  EXPECT_EQ(s.peak_bytes(arena::k), 40u);
  EXPECT_EQ(s.allocated_bytes(arena::k), 40u);
  EXPECT_EQ(s.allocations(arena::k), 1u);
  EXPECT_EQ(s.live_blocks(arena::k), 0u);
}

TEST(alloc_counting_allocator, RebindKeepsStatsAndArenaAndEqualityFollowsThem) {
  sparq::allocation_stats s1, s2;
  sparq::counting_allocator<float> a(s1, arena::v);
  sparq::counting_allocator<double> b(a);
  EXPECT_EQ(b.stats(), &s1);
  EXPECT_EQ(b.arena_of(), arena::v);
  EXPECT_TRUE(a == b);
  EXPECT_FALSE(a != b);
  EXPECT_TRUE(a == sparq::counting_allocator<float>(s1, arena::v));
  EXPECT_FALSE(a == sparq::counting_allocator<float>(s2, arena::v));  // other stats
  EXPECT_FALSE(a == a.with_arena(arena::k));                          // other arena
  EXPECT_EQ(a.with_arena(arena::kt).arena_of(), arena::kt);
  // Memory from one may be released through an equal one, even of another value type.
  double* p = b.allocate(3);
  sparq::counting_allocator<double>(a).deallocate(p, 3);
  EXPECT_EQ(s1.live_bytes(), 0u);
}

TEST(alloc_counting_allocator, NodeContainersRebind) {
  sparq::allocation_stats s;
  {
    std::list<int, sparq::counting_allocator<int>> l{sparq::counting_allocator<int>(s)};
    for (int i = 0; i < 10; ++i) l.push_back(i);
    std::map<int, int, std::less<int>, sparq::counting_allocator<std::pair<const int, int>>> m{
        sparq::counting_allocator<std::pair<const int, int>>(s)};
    for (int i = 0; i < 10; ++i) m[i] = i;
    EXPECT_EQ(s.live_blocks(arena::scratch), 20u);
    EXPECT_GT(s.live_bytes(arena::scratch), 20 * sizeof(int));
  }
  EXPECT_EQ(s.live_bytes(), 0u);
  EXPECT_EQ(s.live_blocks(arena::scratch), 0u);
}

TEST(alloc_counting_allocator, VectorGrowthPeakAndPropagation) {
  sparq::allocation_stats s, other;
  using V = std::vector<float, sparq::counting_allocator<float>>;
  V v{sparq::counting_allocator<float>(s, arena::v)};
  v.reserve(100);
  EXPECT_EQ(s.live_bytes(arena::v), 400u);
  v.reserve(200);  // allocates 800, copies, frees 400: the peak sees both
  EXPECT_EQ(s.live_bytes(arena::v), 800u);
  EXPECT_EQ(s.peak_bytes(arena::v), 1200u);
  EXPECT_EQ(s.peak_bytes(), 1200u);
  s.reset_peak();
  EXPECT_EQ(s.peak_bytes(arena::v), 800u);
  // Copy/move assignment propagate the allocator: the bytes stay attributed to their stats.
  V w{sparq::counting_allocator<float>(other, arena::k)};
  w.resize(10);
  w = v;
  EXPECT_EQ(w.get_allocator().stats(), &s);
  EXPECT_EQ(other.live_bytes(), 0u);
  V x{sparq::counting_allocator<float>(other, arena::k)};
  x = std::move(w);
  EXPECT_EQ(x.get_allocator().stats(), &s);
  x.clear();
  x.shrink_to_fit();
  v.clear();
  v.shrink_to_fit();
  EXPECT_EQ(s.live_bytes(), 0u);
  EXPECT_EQ(other.live_bytes(), 0u);
}

TEST(alloc_counting_allocator, ThreadSafeCounters) {
  sparq::allocation_stats s;
  constexpr int threads = 4, rounds = 2000;
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&s, t] {
      sparq::counting_allocator<char> a(s, static_cast<arena>(t % sparq::arena_count));
      for (int i = 0; i < rounds; ++i) {
        char* p = a.allocate(128);
        a.deallocate(p, 128);
      }
    });
  for (auto& th : pool) th.join();
  EXPECT_EQ(s.live_bytes(), 0u);
  EXPECT_EQ(s.allocations(), std::size_t{threads * rounds});
  EXPECT_LE(s.peak_bytes(), std::size_t{threads * 128});
  EXPECT_GE(s.peak_bytes(), 128u);
}

// ---------------------------------------------------------------------------------------------
// kv_cache arenas: K stored twice costs one more copy.

template <class T>
void check_cache_arenas(std::size_t B, std::size_t H, std::size_t cap, std::size_t d) {
  for (bool keep_kt : {true, false}) {
    sparq::allocation_stats s;
    {
      sparq::kv_cache<T, sparq::counting_allocator<T>> c(B, H, cap, d, keep_kt,
                                                         sparq::counting_allocator<T>(s));
      const std::size_t n = B * H * cap * d * sizeof(T);
      EXPECT_EQ(s.live_bytes(arena::k), n);
      EXPECT_EQ(s.live_bytes(arena::v), n);
      EXPECT_EQ(s.live_bytes(arena::kt), keep_kt ? n : 0u);
      EXPECT_EQ(s.live_bytes(arena::v_mean), B * H * d * sizeof(float));
      EXPECT_EQ(s.live_bytes(arena::scratch), 0u);
      EXPECT_EQ(s.live_bytes(), c.bytes());
      EXPECT_EQ(s.peak_bytes(), c.bytes());  // each array allocated once, at its final size
      EXPECT_EQ(c.get_allocator().stats(), &s);
      // Appending never allocates.
      std::vector<float> kv(H * d, 0.5f);
      const std::size_t before = s.allocations();
      for (std::size_t t = 0; t < cap; ++t) c.append(0, kv.data(), kv.data());
      EXPECT_EQ(s.allocations(), before);
      const std::string table = sparq::format_allocations(s);
      EXPECT_NE(table.find("Kt"), std::string::npos) << table;
      EXPECT_NE(table.find("KV memory"), std::string::npos) << table;
    }
    EXPECT_EQ(s.live_bytes(), 0u);
    EXPECT_GT(s.peak_bytes(), 0u);
  }
  // With Kt the K+Kt+V storage is exactly 3/2 of K+V.
  sparq::allocation_stats with, without;
  sparq::kv_cache<T, sparq::counting_allocator<T>> a(B, H, cap, d, true,
                                                     sparq::counting_allocator<T>(with));
  sparq::kv_cache<T, sparq::counting_allocator<T>> b(B, H, cap, d, false,
                                                     sparq::counting_allocator<T>(without));
  auto storage = [](const sparq::allocation_stats& s) {
    return s.live_bytes() - s.live_bytes(arena::v_mean);
  };
  EXPECT_EQ(2 * storage(with), 3 * storage(without));
  EXPECT_EQ(with.live_bytes(arena::v_mean), without.live_bytes(arena::v_mean));
}

TEST(alloc_kv_cache_arenas, F32) {
  check_cache_arenas<float>(1, 1, 64, 128);
  check_cache_arenas<float>(2, 3, 17, 40);
}
TEST(alloc_kv_cache_arenas, F16) { check_cache_arenas<sparq::f16>(2, 4, 100, 64); }
TEST(alloc_kv_cache_arenas, Bf16) { check_cache_arenas<sparq::bf16>(1, 8, 33, 96); }

TEST(alloc_kv_cache_arenas, DefaultAllocatorStillWorks) {
  sparq::kv_cache<float> c(1, 2, 8, 16);
  EXPECT_EQ(c.bytes(), 3 * 2 * 8 * 16 * 4 + 2 * 16 * 4);
  std::vector<float> kv(2 * 16, 1.0f);
  c.append(0, kv.data(), kv.data());
  EXPECT_EQ(c.length(0), 1u);
}

TEST(alloc_kv_cache_arenas, CacheRowsAreLineAligned) {
  sparq::allocation_stats s;
  sparq::kv_cache<sparq::f16, sparq::counting_allocator<sparq::f16>> c(
      1, 2, 64, 64, true, sparq::counting_allocator<sparq::f16>(s));
  std::vector<float> kv(2 * 64, 1.0f);
  c.append(0, kv.data(), kv.data());
  for (std::size_t h = 0; h < 2; ++h) {
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(c.keys(0, h).data) % 64, 0u);
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(c.keys_t(0, h).data) % 64, 0u);
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(c.values(0, h).data) % 64, 0u);
  }
}

// ---------------------------------------------------------------------------------------------
// workspace_buffer.

TEST(alloc_workspace_buffer, AlignedCountedInScratchAndMovable) {
  sparq::allocation_stats s;
  sparq::counting_allocator<std::byte> a(s, arena::k);  // the buffer moves it to scratch
  {
    sparq::workspace_buffer<sparq::counting_allocator<std::byte>> w(1000, a);
    EXPECT_EQ(w.size(), 1024u);
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(w.data()) % 64, 0u);
    EXPECT_EQ(s.live_bytes(arena::scratch), 1024u);
    EXPECT_EQ(s.live_bytes(arena::k), 0u);
    const sparq::workspace ws = w;
    EXPECT_EQ(ws.data, w.data());
    EXPECT_EQ(ws.bytes, 1024u);
    auto moved = std::move(w);
    EXPECT_EQ(w.data(), nullptr);
    EXPECT_EQ(w.size(), 0u);
    EXPECT_EQ(moved.get().data, ws.data);
    EXPECT_EQ(s.live_bytes(arena::scratch), 1024u);
    moved = sparq::workspace_buffer<sparq::counting_allocator<std::byte>>(10, a);
    EXPECT_EQ(s.live_bytes(arena::scratch), 64u);
  }
  EXPECT_EQ(s.live_bytes(), 0u);
  sparq::workspace_buffer<> plain(100);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(plain.data()) % 64, 0u);
  EXPECT_GE(plain.size(), 100u);
  sparq::workspace_buffer<> empty(0);
  EXPECT_EQ(empty.data(), nullptr);
}

TEST(alloc_workspace_buffer, SizedForStepAndDense) {
  sparq::config cfg;
  cfg.rank = 8;
  cfg.top_k = 16;
  cfg.local = 4;
  auto w = sparq::workspace_buffer<>::for_step(4, 300, 64, cfg);
  EXPECT_GE(w.size(), sparq::step_workspace_bytes(4, 300, 64, cfg));
  auto wd = sparq::workspace_buffer<>::for_dense(4, 64);
  EXPECT_GE(wd.size(), sparq::dense_workspace_bytes(4, 64));
}

// ---------------------------------------------------------------------------------------------
// A decode step never allocates.

template <class T>
void check_step_allocates_nothing(std::size_t g, std::size_t S, std::size_t d, std::size_t k) {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd;
  sparq::kv_cache<T> c(1, 1, S, d);
  std::vector<float> kk(d), vv(d);
  for (std::size_t t = 0; t < S; ++t) {
    for (auto& x : kk) x = nd(rng);
    for (auto& x : vv) x = nd(rng);
    c.append(0, kk.data(), vv.data());
  }
  std::vector<float> q(g * d), out(g * d), lse(g);
  for (auto& x : q) x = nd(rng);
  sparq::config cfg;
  cfg.rank = d / 4 ? d / 4 : 1;
  cfg.top_k = k;
  cfg.local = k / 4;
  auto ws = sparq::workspace_buffer<>::for_step(g, S, d, cfg);
  auto wd = sparq::workspace_buffer<>::for_dense(g, d);
  const auto kv = c.head(0, 0);
  sparq::no_traffic none;
  heap_watch w;
  sparq::step(q.data(), g, kv, cfg, ws, out.data(), none);
  sparq::step<T>(q.data(), g, kv, cfg, ws, out.data());
  sparq::checked_step(q.data(), g, kv, cfg, ws, out.data(), none);
  sparq::dense_step(q.data(), g, kv.k, kv.v, 0.0f, wd, out.data(), lse.data(), none);
  sparq::dense_step(q.data(), g, kv.k, kv.v, 0.0f, wd, out.data());
  sparq::checked_dense_step(q.data(), g, kv.k, kv.v, 0.0f, wd, out.data(), lse.data());
  EXPECT_EQ(w.news(), 0u) << "g=" << g << " S=" << S << " d=" << d << " k=" << k;
}

TEST(alloc_no_heap_in_step, F32) {
  check_step_allocates_nothing<float>(1, 300, 64, 32);
  check_step_allocates_nothing<float>(4, 1000, 128, 64);
  check_step_allocates_nothing<float>(8, 50, 40, 64);  // k >= S: dense path
}
TEST(alloc_no_heap_in_step, F16) {
  check_step_allocates_nothing<sparq::f16>(4, 777, 128, 100);
  check_step_allocates_nothing<sparq::f16>(2, 33, 64, 40);
}
TEST(alloc_no_heap_in_step, Bf16) {
  check_step_allocates_nothing<sparq::bf16>(8, 512, 64, 64);
  check_step_allocates_nothing<sparq::bf16>(1, 129, 72, 16);
}

}  // namespace
