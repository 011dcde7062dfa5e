#pragma once
/// \file paged_view.hpp
/// Paged KV views: a sequence's rows addressed through a block table, as in vLLM and
/// FlashInfer. Every stage that takes a contiguous view (view.hpp) also takes these, with
/// bit-identical results: the kernels reach memory only through `row(s)` and, for Kt,
/// through one contiguous cols_view per page.
///
/// A sequence's positions live in pages of P = 2^page_bits tokens (P must be a power of two:
/// vLLM's 8/16/32, FlashInfer's usual 16; position -> page is then a shift, not a division).
/// `pages[p]` is the pool index of the sequence's p-th page, int32 like FlashInfer `indices`.
///
///   K, V (rows):    element (s, i) at data[pages[s/P] * page_stride + (s%P) * row_stride + i]
///   Kt (columns):   element (i, s) at data[pages[s/P] * page_stride + i * dim_stride + s%P]
///
/// so a Kt page holds P columns ([d][P], dim_stride >= P) and stage 1 streams r runs of P
/// elements per page. Choose P * sizeof(T) >= 64 bytes for stage 1 to read whole cache lines
/// (`sparq-bench-paged` measures the cost of P against a contiguous cache; docs/paged.md).
/// `data` points at page 0 of the pool *for this head*; page_pool adds the head offset.
///
/// page_table is the FlashInfer description of a batch (indptr / indices / last_page_len);
/// page_pool says where a pool's pages are; together they give each (sequence, head) view.

#include <cstddef>
#include <cstdint>

#include "error.hpp"
#include "view.hpp"

namespace sparq {

/// Position-major rows through a block table; shape [length, dim].
template <class T>
struct paged_rows_view {
  using element_type = T;
  static constexpr bool paged = true;  ///< rows reached through a block table
  T* data = nullptr;                  ///< page 0 of the pool, this head
  const std::int32_t* pages = nullptr;///< the sequence's page ids, ceil(length / P) entries
  std::size_t length = 0;             ///< valid positions S
  std::size_t dim = 0;                ///< head dimension d
  unsigned page_bits = 0;             ///< P = 2^page_bits tokens per page
  std::size_t page_stride = 0;        ///< elements between consecutive pool pages
  std::size_t row_stride = 0;         ///< elements between consecutive tokens of a page (>= dim)

  std::size_t page_size() const noexcept { return std::size_t{1} << page_bits; }
  T* row(std::size_t s) const noexcept {
    return data + static_cast<std::size_t>(pages[s >> page_bits]) * page_stride +
           (s & (page_size() - 1)) * row_stride;
  }
  operator paged_rows_view<const T>() const noexcept {
    return {data, pages, length, dim, page_bits, page_stride, row_stride};
  }
};

/// Dimension-major keys through a block table; shape [dim, length]; each page is [dim][P].
template <class T>
struct paged_cols_view {
  using element_type = T;
  static constexpr bool paged = true;  ///< rows reached through a block table
  T* data = nullptr;                  ///< page 0 of the Kt pool, this head
  const std::int32_t* pages = nullptr;///< the sequence's page ids
  std::size_t dim = 0;                ///< head dimension d
  std::size_t length = 0;             ///< valid positions S
  unsigned page_bits = 0;             ///< P = 2^page_bits columns per page
  std::size_t page_stride = 0;        ///< elements between consecutive pool pages
  std::size_t dim_stride = 0;         ///< elements between dimensions within a page (>= P)

  std::size_t page_size() const noexcept { return std::size_t{1} << page_bits; }
  std::size_t page_count() const noexcept { return (length + page_size() - 1) >> page_bits; }
  /// Page p as a contiguous view of its columns [p*P, min(S, (p+1)*P)), local positions 0...
  cols_view<T> page(std::size_t p) const noexcept {
    const std::size_t first = p << page_bits;
    const std::size_t n = length - first < page_size() ? length - first : page_size();
    return {data + static_cast<std::size_t>(pages[p]) * page_stride, dim, n, dim_stride};
  }
  operator paged_cols_view<const T>() const noexcept {
    return {data, pages, dim, length, page_bits, page_stride, dim_stride};
  }
};

/// Everything a SparQ step reads for one KV head of one sequence, paged. v_mean: [dim] fp32
/// running mean of the sequence's V rows (the engine keeps it per sequence and head; see
/// paged_kv_cache::append for the update).
template <class T>
struct paged_kv_head_view {
  paged_rows_view<T> k;
  paged_cols_view<T> kt;
  paged_rows_view<T> v;
  const float* v_mean = nullptr;

  std::size_t length() const noexcept { return k.length; }
  std::size_t dim() const noexcept { return k.dim; }
  operator paged_kv_head_view<const T>() const noexcept { return {k, kt, v, v_mean}; }
};

namespace detail {
/// log2(p) when p is a power of two >= 1, else throws naming `what`.
inline unsigned page_bits_of(std::size_t p, const char* what) {
  if (p == 0 || (p & (p - 1)) != 0 || p > (std::size_t{1} << 30))
    fail(what, " = ", p, "; allowed: a power of two in [1, 2^30]");
  unsigned b = 0;
  while ((std::size_t{1} << b) < p) ++b;
  return b;
}

template <class T>
void check_paged_common(const T* data, const std::int32_t* pages, std::size_t length,
                        std::size_t dim, unsigned page_bits, const char* name, std::size_t S,
                        std::size_t d) {
  if (data == nullptr) fail(name, ".data is null");
  if (length != S) fail(name, ".length = ", length, "; must equal the K length (", S, ")");
  if (dim != d) fail(name, ".dim = ", dim, "; must equal the K dim (", d, ")");
  if (page_bits > 30) fail(name, ".page_bits = ", page_bits, "; allowed: 0..30");
  if (S > 0 && pages == nullptr) fail(name, ".pages is null");
}
/// Throws sparq::error naming `name` unless v is a paged [S][d] row view with valid strides.
template <class T>
void check_view(const paged_rows_view<T>& v, const char* name, std::size_t S, std::size_t d) {
  check_paged_common(v.data, v.pages, v.length, v.dim, v.page_bits, name, S, d);
  if (v.row_stride < d) fail(name, ".row_stride = ", v.row_stride, "; allowed: >= dim (", d, ")");
  if (v.page_stride < (v.page_size() - 1) * v.row_stride + d)
    fail(name, ".page_stride = ", v.page_stride, "; allowed: >= (page_size - 1) * row_stride + dim (",
         (v.page_size() - 1) * v.row_stride + d, ")");
}
/// Throws sparq::error naming `name` unless v is a paged [d][S] column view with valid strides.
template <class T>
void check_view(const paged_cols_view<T>& v, const char* name, std::size_t S, std::size_t d) {
  check_paged_common(v.data, v.pages, v.length, v.dim, v.page_bits, name, S, d);
  if (v.dim_stride < v.page_size())
    fail(name, ".dim_stride = ", v.dim_stride, "; allowed: >= page_size (", v.page_size(), ")");
  if (v.page_stride < (d - 1) * v.dim_stride + v.page_size())
    fail(name, ".page_stride = ", v.page_stride, "; allowed: >= (dim - 1) * dim_stride + page_size (",
         (d - 1) * v.dim_stride + v.page_size(), ")");
}
}  // namespace detail

/// A batch in a page pool, FlashInfer's CSR form: sequence b owns the pages
/// indices[indptr[b] .. indptr[b+1]), all full except the last, which holds
/// last_page_len[b] tokens (1..page_size). A sequence with no pages has length 0.
struct page_table {
  const std::int32_t* indptr = nullptr;         ///< [batch + 1], non-decreasing, indptr[0] = 0
  const std::int32_t* indices = nullptr;        ///< [indptr[batch]] page ids, each < num_pages
  const std::int32_t* last_page_len = nullptr;  ///< [batch]
  std::size_t batch = 0;
  std::size_t page_size = 0;  ///< tokens per page P, a power of two
  std::size_t num_pages = 0;  ///< pages in the pool (bounds every index)

  std::size_t page_count(std::size_t b) const noexcept {
    return static_cast<std::size_t>(indptr[b + 1] - indptr[b]);
  }
  std::size_t length(std::size_t b) const noexcept {
    const std::size_t n = page_count(b);
    return n == 0 ? 0 : (n - 1) * page_size + static_cast<std::size_t>(last_page_len[b]);
  }
  const std::int32_t* pages(std::size_t b) const noexcept { return indices + indptr[b]; }

  /// Throws sparq::error naming the first bad field, entry and allowed range. O(pages).
  void validate() const {
    detail::page_bits_of(page_size, "page_table.page_size");
    if (batch == 0) detail::fail("page_table.batch = 0; allowed: >= 1");
    if (indptr == nullptr) detail::fail("page_table.indptr is null");
    if (last_page_len == nullptr) detail::fail("page_table.last_page_len is null");
    if (indptr[0] != 0) detail::fail("page_table.indptr[0] = ", indptr[0], "; must be 0");
    for (std::size_t b = 0; b < batch; ++b) {
      if (indptr[b + 1] < indptr[b])
        detail::fail("page_table.indptr[", b + 1, "] = ", indptr[b + 1], " < indptr[", b,
                     "] = ", indptr[b], "; indptr must be non-decreasing");
      if (page_count(b) > 0 &&
          (last_page_len[b] < 1 || static_cast<std::size_t>(last_page_len[b]) > page_size))
        detail::fail("page_table.last_page_len[", b, "] = ", last_page_len[b],
                     "; allowed: 1..page_size (", page_size, ") for a sequence with pages");
    }
    if (indptr[batch] > 0 && indices == nullptr) detail::fail("page_table.indices is null");
    for (std::int32_t j = 0; j < indptr[batch]; ++j)
      if (indices[j] < 0 || static_cast<std::size_t>(indices[j]) >= num_pages)
        detail::fail("page_table.indices[", j, "] = ", indices[j],
                     "; allowed: 0 <= page id < num_pages (", num_pages, ")");
  }
};

/// Where a pool's pages live, for K and V (rows) and Kt (columns); strides in elements.
/// The factories cover the common layouts; any other strided layout can be filled in by hand.
template <class T>
struct page_pool {
  T* k = nullptr;
  T* v = nullptr;
  T* kt = nullptr;                   ///< null when the pool keeps no Kt (dense-only use)
  std::size_t kv_heads = 0, head_dim = 0, page_size = 0;
  std::size_t page_stride = 0;       ///< K/V: between pages
  std::size_t head_stride = 0;       ///< K/V: between heads of a page
  std::size_t row_stride = 0;        ///< K/V: between tokens of a page
  std::size_t kt_page_stride = 0;    ///< Kt: between pages
  std::size_t kt_head_stride = 0;    ///< Kt: between heads of a page
  std::size_t kt_dim_stride = 0;     ///< Kt: between dimensions of a head's page

  /// K/V pages [page][head][P][d] (FlashInfer HND), Kt pages [page][head][d][P].
  static page_pool hnd(T* k, T* v, T* kt, std::size_t kv_heads, std::size_t head_dim,
                       std::size_t page_size) noexcept {
    const std::size_t hp = kv_heads * page_size * head_dim;
    return {k, v, kt, kv_heads, head_dim, page_size, hp, page_size * head_dim, head_dim,
            hp, head_dim * page_size, page_size};
  }
  /// K/V pages [page][P][head][d] (FlashInfer NHD, vLLM), Kt pages [page][head][d][P].
  static page_pool nhd(T* k, T* v, T* kt, std::size_t kv_heads, std::size_t head_dim,
                       std::size_t page_size) noexcept {
    const std::size_t hp = kv_heads * page_size * head_dim;
    return {k, v, kt, kv_heads, head_dim, page_size, hp, head_dim, kv_heads * head_dim,
            hp, head_dim * page_size, page_size};
  }

  /// The view of KV head h of sequence b of `table` (which must use this pool's page size).
  /// v_mean: that sequence's running V mean for head h ([head_dim] fp32), or nullptr.
  /// Throws on a head out of range or a page-size mismatch; does not re-validate the table.
  paged_kv_head_view<const T> head(const page_table& table, std::size_t b, std::size_t h,
                                   const float* v_mean) const {
    if (b >= table.batch)
      detail::fail("page_pool::head: sequence = ", b, "; allowed: < page_table.batch (",
                   table.batch, ")");
    if (h >= kv_heads)
      detail::fail("page_pool::head: kv head = ", h, "; allowed: < kv_heads (", kv_heads, ")");
    if (table.page_size != page_size)
      detail::fail("page_pool::head: page_table.page_size = ", table.page_size,
                   "; must equal the pool's page_size (", page_size, ")");
    const unsigned bits = detail::page_bits_of(page_size, "page_pool.page_size");
    const std::size_t S = table.length(b);
    const std::int32_t* pg = table.pages(b);
    const paged_rows_view<const T> kr{k + h * head_stride, pg, S, head_dim, bits, page_stride,
                                      row_stride};
    const paged_rows_view<const T> vr{v + h * head_stride, pg, S, head_dim, bits, page_stride,
                                      row_stride};
    paged_cols_view<const T> kc{};
    if (kt != nullptr)
      kc = {kt + h * kt_head_stride, pg, head_dim, S, bits, kt_page_stride, kt_dim_stride};
    return {kr, kc, vr, v_mean};
  }
};

}  // namespace sparq
