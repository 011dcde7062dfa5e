#pragma once
/// \file workspace_buffer.hpp
/// `workspace_buffer`: an owning, 64-byte aligned scratch buffer allocated through any
/// allocator (a sparq::counting_allocator counts it in arena scratch) that converts to the
/// non-owning `sparq::workspace` a step takes. Allocate it once, outside the decode loop:
///
///   auto ws = sparq::workspace_buffer<>::for_step(group, capacity, head_dim, cfg);
///   sparq::step(q, group, cache.head(0, h), cfg, ws, out, traffic);

#include <cstddef>
#include <memory>
#include <utility>

#include "config.hpp"
#include "counting_allocator.hpp"
#include "detail/size_math.hpp"
#include "error.hpp"
#include "workspace.hpp"

namespace sparq {

/// An owning, 64-byte aligned scratch buffer allocated through `Alloc` (rebound; a counting
/// allocator counts it in arena scratch). Converts to the non-owning `sparq::workspace` that
/// step() / dense_step() take. Move-only. Allocate it once, outside the decode loop.
template <class Alloc = std::allocator<std::byte>>
class workspace_buffer {
  struct alignas(64) line {
    unsigned char bytes[64];
  };
  using line_alloc = typename std::allocator_traits<Alloc>::template rebind_alloc<line>;
  using traits = std::allocator_traits<line_alloc>;

 public:
  /// A buffer of at least `bytes` bytes (rounded up to whole 64-byte lines). Throws
  /// sparq::error for more than the largest object (PTRDIFF_MAX bytes), e.g. the SIZE_MAX a
  /// planner returns for sizes that overflow.
  explicit workspace_buffer(std::size_t bytes, const Alloc& alloc = Alloc())
      : alloc_(allocator_for_arena<line>(alloc, arena::scratch)),
        lines_(lines_for(bytes)),
        data_(lines_ ? traits::allocate(alloc_, lines_) : nullptr) {}

  /// Sized for one SparQ step of `group` heads over at most `max_length` positions.
  static workspace_buffer for_step(std::size_t group, std::size_t max_length,
                                   std::size_t head_dim, const config& cfg,
                                   const Alloc& alloc = Alloc()) {
    return workspace_buffer(step_workspace_bytes(group, max_length, head_dim, cfg), alloc);
  }
  /// Sized for one dense step of `group` heads.
  static workspace_buffer for_dense(std::size_t group, std::size_t head_dim,
                                    const Alloc& alloc = Alloc()) {
    return workspace_buffer(dense_workspace_bytes(group, head_dim), alloc);
  }

  static std::size_t lines_for(std::size_t bytes) {
    if (bytes > detail::max_object_bytes)
      detail::fail("workspace_buffer: bytes = ", bytes, "; allowed: <= ", detail::max_object_bytes,
                   " (the largest object; a planner returns SIZE_MAX for sizes that overflow)");
    return bytes / sizeof(line) + (bytes % sizeof(line) != 0);
  }

  workspace_buffer(workspace_buffer&& o) noexcept
      : alloc_(std::move(o.alloc_)), lines_(std::exchange(o.lines_, 0)),
        data_(std::exchange(o.data_, nullptr)) {}
  workspace_buffer& operator=(workspace_buffer&& o) noexcept {
    if (this != &o) {
      release();
      alloc_ = std::move(o.alloc_);
      lines_ = std::exchange(o.lines_, 0);
      data_ = std::exchange(o.data_, nullptr);
    }
    return *this;
  }
  workspace_buffer(const workspace_buffer&) = delete;
  workspace_buffer& operator=(const workspace_buffer&) = delete;
  ~workspace_buffer() { release(); }

  /// 64-byte aligned start of the buffer (nullptr when empty).
  void* data() const noexcept { return data_; }
  /// Usable bytes (a multiple of 64).
  std::size_t size() const noexcept { return lines_ * sizeof(line); }
  workspace get() const noexcept { return {data_, size()}; }
  operator workspace() const noexcept { return get(); }

 private:
  void release() noexcept {
    if (data_) traits::deallocate(alloc_, data_, lines_);
    data_ = nullptr;
    lines_ = 0;
  }

  line_alloc alloc_;
  std::size_t lines_;
  line* data_;
};

}  // namespace sparq
