#pragma once
// A scoped global heap counter for tests that assert "allocates nothing": it REPLACES the
// program's global operator new/delete, so include it from exactly one translation unit of a
// test executable (each tests/test_*.cpp is its own executable). Every replaceable operator
// new counts into g_heap_news while a heap_watch is alive on any thread.

#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <new>

namespace {
std::atomic<int> g_watching{0};
std::atomic<std::size_t> g_heap_news{0};

void* counted_new(std::size_t n) {
  if (g_watching.load(std::memory_order_relaxed) > 0)
    g_heap_news.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void* counted_new_aligned(std::size_t n, std::align_val_t al) {
  if (g_watching.load(std::memory_order_relaxed) > 0)
    g_heap_news.fetch_add(1, std::memory_order_relaxed);
  void* p = nullptr;
  const std::size_t want = static_cast<std::size_t>(al);
  const std::size_t a = want < sizeof(void*) ? sizeof(void*) : want;
  if (posix_memalign(&p, a, n ? n : 1) != 0) throw std::bad_alloc();
  return p;
}

// Every replaced operator delete frees through this out-of-line function: when GCC inlines
// an operator delete that calls std::free directly next to a `new T` it warns
// -Wmismatched-new-delete (it cannot see that our operator new is malloc).
[[gnu::noinline]] void counted_delete(void* p) noexcept { std::free(p); }

struct heap_watch {
  std::size_t start;
  heap_watch() : start(g_heap_news.load()) { g_watching.fetch_add(1); }
  ~heap_watch() { g_watching.fetch_sub(1); }
  std::size_t news() const { return g_heap_news.load() - start; }
};
}  // namespace

void* operator new(std::size_t n) { return counted_new(n); }
void* operator new[](std::size_t n) { return counted_new(n); }
void* operator new(std::size_t n, std::align_val_t a) { return counted_new_aligned(n, a); }
void* operator new[](std::size_t n, std::align_val_t a) { return counted_new_aligned(n, a); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return counted_new(n);
  } catch (...) {
    return nullptr;
  }
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return counted_new(n);
  } catch (...) {
    return nullptr;
  }
}
void operator delete(void* p) noexcept { counted_delete(p); }
void operator delete[](void* p) noexcept { counted_delete(p); }
void operator delete(void* p, std::size_t) noexcept { counted_delete(p); }
void operator delete[](void* p, std::size_t) noexcept { counted_delete(p); }
void operator delete(void* p, std::align_val_t) noexcept { counted_delete(p); }
void operator delete[](void* p, std::align_val_t) noexcept { counted_delete(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { counted_delete(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { counted_delete(p); }
