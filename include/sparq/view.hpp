#pragma once
/// \file view.hpp
/// Non-owning strided views of one KV head (mdspan vocabulary: `extent(i)`, `stride(i)`).
///
/// Only the innermost stride is fixed (= 1); the row stride is a runtime value in elements, so
/// a view can point into any cache layout ([B][H][S][d], [B][S][H][d], padded rows ...).
/// Kernels reach memory only through `row()` / `dim_row()`, so a paged view can slot in later.

#include <cstddef>

#include "error.hpp"

namespace sparq {

/// Position-major rows: element (s, i) is at `data[s * row_stride + i]`; shape [length, dim].
template <class T>
struct rows_view {
  using element_type = T;
  static constexpr bool paged = false;  ///< rows reached through a block table
  T* data = nullptr;
  std::size_t length = 0;      ///< number of valid positions S
  std::size_t dim = 0;         ///< head dimension d
  std::size_t row_stride = 0;  ///< elements between consecutive positions (>= dim)

  T* row(std::size_t s) const noexcept { return data + s * row_stride; }
  constexpr std::size_t extent(int i) const noexcept { return i == 0 ? length : dim; }
  constexpr std::size_t stride(int i) const noexcept { return i == 0 ? row_stride : 1; }
  operator rows_view<const T>() const noexcept { return {data, length, dim, row_stride}; }
};

/// Dimension-major keys Kt: element (i, s) is at `data[i * dim_stride + s]`; shape [dim, length].
/// Row i holds component i of every key, so stage 1 reads r contiguous runs.
template <class T>
struct cols_view {
  using element_type = T;
  static constexpr bool paged = false;  ///< rows reached through a block table
  T* data = nullptr;
  std::size_t dim = 0;         ///< head dimension d
  std::size_t length = 0;      ///< number of valid positions S
  std::size_t dim_stride = 0;  ///< elements between consecutive dimensions (>= length; the capacity)

  T* dim_row(std::size_t i) const noexcept { return data + i * dim_stride; }
  constexpr std::size_t extent(int i) const noexcept { return i == 0 ? dim : length; }
  constexpr std::size_t stride(int i) const noexcept { return i == 0 ? dim_stride : 1; }
  operator cols_view<const T>() const noexcept { return {data, dim, length, dim_stride}; }
};

/// Everything a SparQ step reads for one KV head: K rows, Kt, V rows, and the running fp32
/// mean of the V rows (`v_mean`, [dim]). All three views share `length` and `dim`.
template <class T>
struct kv_head_view {
  rows_view<T> k;
  cols_view<T> kt;
  rows_view<T> v;
  const float* v_mean = nullptr;

  std::size_t length() const noexcept { return k.length; }
  std::size_t dim() const noexcept { return k.dim; }
  operator kv_head_view<const T>() const noexcept { return {k, kt, v, v_mean}; }
};

namespace detail {
/// Throws sparq::error naming `name` unless v is a [S][d] row view with a valid stride.
template <class T>
void check_view(const rows_view<T>& v, const char* name, std::size_t S, std::size_t d) {
  if (v.data == nullptr) fail(name, ".data is null");
  if (v.length != S) fail(name, ".length = ", v.length, "; must equal the K length (", S, ")");
  if (v.dim != d) fail(name, ".dim = ", v.dim, "; must equal the K dim (", d, ")");
  if (v.row_stride < d) fail(name, ".row_stride = ", v.row_stride, "; allowed: >= dim (", d, ")");
}
/// Throws sparq::error naming `name` unless v is a [d][S] column view with a valid stride.
template <class T>
void check_view(const cols_view<T>& v, const char* name, std::size_t S, std::size_t d) {
  if (v.data == nullptr) fail(name, ".data is null");
  if (v.length != S) fail(name, ".length = ", v.length, "; must equal S (", S, ")");
  if (v.dim != d) fail(name, ".dim = ", v.dim, "; must equal d (", d, ")");
  if (v.dim_stride < S) fail(name, ".dim_stride = ", v.dim_stride, "; allowed: >= length (", S, ")");
}
}  // namespace detail

}  // namespace sparq
