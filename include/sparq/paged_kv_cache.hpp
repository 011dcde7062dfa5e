#pragma once
/// \file paged_kv_cache.hpp
/// An owning paged KV cache: a pool of pages shared by up to `max_sequences` sequences, each
/// with its own block table, keeping what a SparQ step reads (K, V, the dimension-major Kt,
/// the running fp32 V mean). It is the paged counterpart of kv_cache and a reference for
/// engines that own their pool: they only need page_pool / page_table (paged_view.hpp) and
/// the same append rules (Kt column per token, v_mean += (v - v_mean) / n in fp32).
///
/// Layout (elements, FlashInfer HND): K, V: [num_pages][kv_heads][P][d];
/// Kt: [num_pages][kv_heads][d][P]; v_mean: [max_sequences][kv_heads][d].
/// A sequence takes pages from the free list as it grows (append) and gives them back on
/// reset; shuffle_free_pages scatters the pool the way a long-running server's pool is.
/// Views and tables returned here stay valid until the next append/reset of that sequence.
///
/// Allocation: every array comes from `Alloc` (rebound; by default aligned_allocator, 64-byte
/// aligned as in kv_cache; an arena-aware allocator such as counting_allocator tallies K, Kt,
/// V and v_mean separately, as with kv_cache).

#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "aligned_allocator.hpp"
#include "config.hpp"
#include "counting_allocator.hpp"
#include "detail/size_math.hpp"
#include "dtype.hpp"
#include "error.hpp"
#include "kv_cache.hpp"
#include "paged_view.hpp"
#include "traffic.hpp"

namespace sparq {

template <class T, class Alloc = aligned_allocator<T>>
class paged_kv_cache {
  static_assert(is_storage_type_v<T>,
                "paged_kv_cache<T>: T must be float, sparq::f16 or sparq::bf16");
  using value_alloc = typename std::allocator_traits<Alloc>::template rebind_alloc<T>;
  using float_alloc = typename std::allocator_traits<Alloc>::template rebind_alloc<float>;

 public:
  /// page_size: a power of two. Throws sparq::error if a size is zero or out of range, or an
  /// array would exceed the largest object (PTRDIFF_MAX bytes).
  paged_kv_cache(std::size_t max_sequences, std::size_t kv_heads, std::size_t num_pages,
                 std::size_t page_size, std::size_t head_dim, bool keep_kt = true,
                 const Alloc& alloc = Alloc())
      : nseq_(checked_sizes(max_sequences, kv_heads, num_pages, page_size, head_dim)),
        heads_(kv_heads), npages_(num_pages), P_(page_size),
        d_(head_dim), keep_kt_(keep_kt), k_(allocator_for_arena<T>(alloc, arena::k)),
        kt_(allocator_for_arena<T>(alloc, arena::kt)), v_(allocator_for_arena<T>(alloc, arena::v)),
        v_mean_(allocator_for_arena<float>(alloc, arena::v_mean)), len_(max_sequences, 0),
        pages_(max_sequences) {
    bits_ = detail::page_bits_of(page_size, "paged_kv_cache: page_size");
    const std::size_t n = num_pages * kv_heads * page_size * head_dim;  // checked_sizes: fits
    k_.resize(n);
    v_.resize(n);
    if (keep_kt) kt_.resize(n);
    v_mean_.assign(max_sequences * kv_heads * head_dim, 0.0f);
    free_.reserve(num_pages);
    for (std::size_t p = num_pages; p-- > 0;) free_.push_back(static_cast<std::int32_t>(p));
  }

  std::size_t max_sequences() const noexcept { return nseq_; }
  std::size_t kv_heads() const noexcept { return heads_; }
  std::size_t num_pages() const noexcept { return npages_; }
  std::size_t page_size() const noexcept { return P_; }
  std::size_t head_dim() const noexcept { return d_; }
  bool has_kt() const noexcept { return keep_kt_; }
  std::size_t free_pages() const noexcept { return free_.size(); }
  /// Bytes held for the pool's K, Kt and V pages (storage), and for v_mean.
  std::size_t bytes() const noexcept {
    return (k_.size() + kt_.size() + v_.size()) * sizeof(T) + v_mean_.size() * sizeof(float);
  }
  std::size_t length(std::size_t seq) const {
    check_seq(seq, "length");
    return len_[seq];
  }
  /// The page ids of sequence seq, in position order.
  const std::vector<std::int32_t>& pages(std::size_t seq) const {
    check_seq(seq, "pages");
    return pages_[seq];
  }

  /// Appends n tokens to sequence seq: k, v are [n][kv_heads][d] fp32 (k after RoPE), the same
  /// contract as kv_cache::append. Takes pages from the free list as needed; throws (before
  /// writing anything) if the pool has too few free pages or the sequence would pass
  /// max_positions.
  template <class Traffic = no_traffic>
  void append(std::size_t seq, std::size_t n, const float* k, const float* v,
              Traffic&& traffic = Traffic{}) {
    check_seq(seq, "append");
    if (k == nullptr || v == nullptr) detail::fail("paged_kv_cache::append: k or v is null");
    if (n > max_positions - len_[seq])
      detail::fail("paged_kv_cache::append: sequence ", seq, " holds ", len_[seq],
                   " positions; appending ", n, " would pass max_positions (", max_positions,
                   ": positions are 32-bit)");
    const std::size_t have = pages_[seq].size() * P_;
    const std::size_t need = len_[seq] + n > have ? (len_[seq] + n - have + P_ - 1) >> bits_ : 0;
    if (need > free_.size())
      detail::fail("paged_kv_cache::append: sequence ", seq, " needs ", need,
                   " more pages for ", n, " tokens; the pool has ", free_.size(), " free of ",
                   npages_);
    for (std::size_t i = 0; i < need; ++i) {
      pages_[seq].push_back(free_.back());
      free_.pop_back();
    }
    traffic.begin(stage::append);
    for (std::size_t t = 0; t < n; ++t) {
      const std::size_t s = len_[seq];
      const std::size_t page = static_cast<std::size_t>(pages_[seq][s >> bits_]);
      const std::size_t slot = s & (P_ - 1);
      const float count = static_cast<float>(s + 1);
      for (std::size_t h = 0; h < heads_; ++h) {
        const float* kh = k + (t * heads_ + h) * d_;
        const float* vh = v + (t * heads_ + h) * d_;
        const std::size_t base = (page * heads_ + h) * P_ * d_;
        T* kt = keep_kt_ ? kt_.data() + base + slot : nullptr;  // Kt page [d][P] of this head
        detail::store_token(kh, vh, d_, k_.data() + base + slot * d_, v_.data() + base + slot * d_,
                            kt, P_, v_mean_.data() + (seq * heads_ + h) * d_, count, traffic);
      }
      ++len_[seq];
    }
  }
  void append(std::size_t seq, const float* k, const float* v) { append(seq, 1, k, v); }

  /// Forgets sequence seq (length 0, v_mean 0) and returns its pages to the free list.
  void reset(std::size_t seq) {
    check_seq(seq, "reset");
    for (std::size_t i = pages_[seq].size(); i-- > 0;) free_.push_back(pages_[seq][i]);
    pages_[seq].clear();
    len_[seq] = 0;
    for (std::size_t i = 0; i < heads_ * d_; ++i) v_mean_[seq * heads_ * d_ + i] = 0.0f;
  }

  /// Permutes the free list with a fixed generator (splitmix64 + Fisher-Yates): the same seed
  /// gives the same page placement on every platform.
  void shuffle_free_pages(std::uint64_t seed) noexcept {
    for (std::size_t i = free_.size(); i > 1; --i) {
      seed += 0x9e3779b97f4a7c15ull;
      std::uint64_t z = seed;
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
      z ^= z >> 31;
      std::swap(free_[i - 1], free_[z % i]);
    }
  }

  /// Where the pool's pages are (HND layout).
  page_pool<const T> pool() const noexcept {
    return page_pool<const T>::hnd(k_.data(), v_.data(), keep_kt_ ? kt_.data() : nullptr,
                                   heads_, d_, P_);
  }

  /// FlashInfer arrays (indptr, indices, last_page_len) for sequences 0..max_sequences-1,
  /// rebuilt on each call; valid until the next call, append or reset.
  page_table table() {
    indptr_.assign(1, 0);
    indices_.clear();
    last_.clear();
    for (std::size_t b = 0; b < nseq_; ++b) {
      indices_.insert(indices_.end(), pages_[b].begin(), pages_[b].end());
      indptr_.push_back(static_cast<std::int32_t>(indices_.size()));
      const std::size_t in_last = len_[b] - (len_[b] == 0 ? 0 : ((len_[b] - 1) >> bits_) << bits_);
      last_.push_back(static_cast<std::int32_t>(in_last));
    }
    return {indptr_.data(), indices_.data(), last_.data(), nseq_, P_, npages_};
  }

  const float* v_mean(std::size_t seq, std::size_t h) const {
    check_head(seq, h);
    return v_mean_.data() + (seq * heads_ + h) * d_;
  }

  /// Everything a SparQ step reads for KV head h of sequence seq (kt is empty when the cache
  /// keeps no Kt).
  paged_kv_head_view<const T> head(std::size_t seq, std::size_t h) const {
    check_head(seq, h);
    const page_pool<const T> pl = pool();
    const std::int32_t* pg = pages_[seq].data();
    const std::size_t S = len_[seq];
    const paged_rows_view<const T> kr{pl.k + h * pl.head_stride, pg, S, d_, bits_,
                                      pl.page_stride, pl.row_stride};
    const paged_rows_view<const T> vr{pl.v + h * pl.head_stride, pg, S, d_, bits_,
                                      pl.page_stride, pl.row_stride};
    paged_cols_view<const T> kc{};
    if (keep_kt_)
      kc = {pl.kt + h * pl.kt_head_stride, pg, d_, S, bits_, pl.kt_page_stride, pl.kt_dim_stride};
    return {kr, kc, vr, v_mean(seq, h)};
  }

 private:
  void check_seq(std::size_t seq, const char* what) const {
    if (seq >= nseq_)
      detail::fail("paged_kv_cache::", what, ": seq = ", seq,
                   "; allowed: 0 <= seq < max_sequences (", nseq_, ")");
  }
  void check_head(std::size_t seq, std::size_t h) const {
    check_seq(seq, "view");
    if (h >= heads_)
      detail::fail("paged_kv_cache: kv head = ", h, "; allowed: 0 <= head < kv_heads (", heads_,
                   ")");
  }

  // Runs in the first member's initializer, before any member allocates; returns
  // max_sequences.
  static std::size_t checked_sizes(std::size_t max_sequences, std::size_t kv_heads,
                                   std::size_t num_pages, std::size_t page_size,
                                   std::size_t head_dim) {
    if (max_sequences == 0) detail::fail("paged_kv_cache: max_sequences = 0; allowed: >= 1");
    if (kv_heads == 0) detail::fail("paged_kv_cache: kv_heads = 0; allowed: >= 1");
    if (num_pages == 0 || num_pages > 0x7fffffffu)
      detail::fail("paged_kv_cache: num_pages = ", num_pages, "; allowed: 1..2^31-1");
    if (head_dim == 0) detail::fail("paged_kv_cache: head_dim = 0; allowed: >= 1");
    detail::page_bits_of(page_size, "paged_kv_cache: page_size");
    detail::checked_product("paged_kv_cache: num_pages x kv_heads x page_size x head_dim x sizeof(T)",
                            num_pages, kv_heads, page_size, head_dim, sizeof(T));
    detail::checked_product("paged_kv_cache: max_sequences x kv_heads x head_dim x sizeof(float) (v_mean)",
                            max_sequences, kv_heads, head_dim, sizeof(float));
    detail::checked_product("paged_kv_cache: max_sequences x sizeof(block table)", max_sequences,
                            sizeof(std::vector<std::int32_t>));
    return max_sequences;
  }

  std::size_t nseq_, heads_, npages_, P_, d_;
  unsigned bits_ = 0;
  bool keep_kt_;
  std::vector<T, value_alloc> k_, kt_, v_;
  std::vector<float, float_alloc> v_mean_;
  std::vector<std::size_t> len_;
  std::vector<std::vector<std::int32_t>> pages_;
  std::vector<std::int32_t> free_;
  std::vector<std::int32_t> indptr_, indices_, last_;
};

}  // namespace sparq
