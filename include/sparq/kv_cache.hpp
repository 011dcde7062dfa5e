#pragma once
/// \file kv_cache.hpp
/// An owning KV cache for B sequences x H KV heads x capacity positions x d, in storage type
/// T, that keeps what a SparQ step reads: K rows, the dimension-major copy Kt (one column
/// written per appended token), V rows, and the running fp32 mean of the stored V rows.
///
/// Layout (elements): K, V: [B][H][capacity][d]; Kt: [B][H][d][capacity]; v_mean: [B][H][d].
/// Memory: 3 * B*H*capacity*d*sizeof(T) with Kt (the second K copy costs 50% more than K+V),
/// 2 * ... without (keep_kt = false, dense-only use).
/// v_mean is the mean of the values as stored (after rounding to T), updated on every append
/// as mean += (v - mean) / n in fp32, never recomputed from the cache.
///
/// Allocation: every array comes from `Alloc` (rebound); the default, aligned_allocator,
/// starts each on a 64-byte line (counting_allocator does too; a custom allocator should, or
/// every row straddles an extra line and every vector load two). An allocator that knows
/// arenas (sparq::counting_allocator, anything with `with_arena(arena)`) gets one arena per
/// array, so K, Kt, V and v_mean are tallied separately:
///   sparq::allocation_stats stats;
///   using alloc = sparq::counting_allocator<float>;
///   sparq::kv_cache<float, alloc> c(1, 8, 4096, 128, true, alloc(stats));
///   stats.live_bytes(sparq::arena::kt);  // 8*4096*128*4
/// The per-sequence lengths (B size_t) are bookkeeping and use std::allocator.

#include <cstddef>
#include <memory>
#include <vector>

#include "aligned_allocator.hpp"
#include "config.hpp"
#include "counting_allocator.hpp"
#include "detail/size_math.hpp"
#include "dtype.hpp"
#include "error.hpp"
#include "traffic.hpp"
#include "view.hpp"

namespace sparq {

namespace detail {
/// What appending one token stores for one KV head, in every cache kind: the K and V rows
/// (rounded to T), the K values again as one Kt column (element i at kt[i * kt_stride];
/// skipped when kt is null), and the running mean += (v - mean) / count in fp32 over the
/// values as stored (count = the sequence length after this token).
template <class T, class Traffic>
void store_token(const float* k, const float* v, std::size_t d, T* krow, T* vrow, T* kt,
                 std::size_t kt_stride, float* mean, float count, Traffic& traffic) {
  for (std::size_t i = 0; i < d; ++i) {
    krow[i] = from_float<T>(k[i]);
    vrow[i] = from_float<T>(v[i]);
    mean[i] += (to_float(vrow[i]) - mean[i]) / count;
  }
  traffic.write(arena::k, krow, d * sizeof(T));
  traffic.write(arena::v, vrow, d * sizeof(T));
  traffic.read(arena::v_mean, mean, d * sizeof(float));
  traffic.write(arena::v_mean, mean, d * sizeof(float));
  if (kt == nullptr) return;
  for (std::size_t i = 0; i < d; ++i) {
    kt[i * kt_stride] = krow[i];
    traffic.write(arena::kt, kt + i * kt_stride, sizeof(T));
  }
}
}  // namespace detail

template <class T, class Alloc = aligned_allocator<T>>
class kv_cache {
  static_assert(is_storage_type_v<T>, "kv_cache<T>: T must be float, sparq::f16 or sparq::bf16");
  using value_alloc = typename std::allocator_traits<Alloc>::template rebind_alloc<T>;
  using float_alloc = typename std::allocator_traits<Alloc>::template rebind_alloc<float>;

 public:
  /// Throws sparq::error if any size is zero, capacity exceeds max_positions, or an array
  /// would exceed the largest object (PTRDIFF_MAX bytes).
  kv_cache(std::size_t batch, std::size_t kv_heads, std::size_t capacity, std::size_t head_dim,
           bool keep_kt = true, const Alloc& alloc = Alloc())
      : batch_(checked_sizes(batch, kv_heads, capacity, head_dim)), heads_(kv_heads),
        cap_(capacity), d_(head_dim), keep_kt_(keep_kt),
        alloc_(alloc), k_(allocator_for_arena<T>(alloc, arena::k)),
        kt_(allocator_for_arena<T>(alloc, arena::kt)), v_(allocator_for_arena<T>(alloc, arena::v)),
        v_mean_(allocator_for_arena<float>(alloc, arena::v_mean)), len_(batch, 0) {
    const std::size_t n = batch * kv_heads * capacity * head_dim;  // checked_sizes: it fits
    k_.resize(n);
    v_.resize(n);
    if (keep_kt) kt_.resize(n);
    v_mean_.assign(batch * kv_heads * head_dim, 0.0f);
  }

  std::size_t batch() const noexcept { return batch_; }
  std::size_t kv_heads() const noexcept { return heads_; }
  std::size_t capacity() const noexcept { return cap_; }
  std::size_t head_dim() const noexcept { return d_; }
  bool has_kt() const noexcept { return keep_kt_; }
  /// The allocator the cache was built with (each array holds a rebound copy of it).
  Alloc get_allocator() const { return alloc_; }
  std::size_t length(std::size_t seq) const {
    check_seq(seq, "length");
    return len_[seq];
  }
  /// Bytes held for K, Kt and V (storage), and for v_mean.
  std::size_t bytes() const noexcept {
    return (k_.size() + kt_.size() + v_.size()) * sizeof(T) + v_mean_.size() * sizeof(float);
  }

  /// Appends one token to sequence `seq`: k, v are [kv_heads][d] fp32 (k after RoPE).
  void append(std::size_t seq, const float* k, const float* v) { append(seq, 1, k, v); }

  /// Appends n tokens (a prefill block) to sequence `seq`: k, v are [n][kv_heads][d] fp32,
  /// token-major as a projection produces them. Throws if the sequence would overflow.
  template <class Traffic = no_traffic>
  void append(std::size_t seq, std::size_t n, const float* k, const float* v,
              Traffic&& traffic = Traffic{}) {
    check_seq(seq, "append");
    if (k == nullptr || v == nullptr) detail::fail("kv_cache::append: k or v is null");
    if (n > cap_ - len_[seq])
      detail::fail("kv_cache::append: sequence ", seq, " holds ", len_[seq], " of ", cap_,
                   " positions; appending ", n, " would overflow its capacity");
    traffic.begin(stage::append);
    for (std::size_t t = 0; t < n; ++t) {
      const std::size_t s = len_[seq];
      const float count = static_cast<float>(s + 1);
      for (std::size_t h = 0; h < heads_; ++h) {
        const float* kh = k + (t * heads_ + h) * d_;
        const float* vh = v + (t * heads_ + h) * d_;
        T* kt = keep_kt_ ? kt_.data() + (seq * heads_ + h) * d_ * cap_ + s : nullptr;
        detail::store_token(kh, vh, d_, k_.data() + row_offset(seq, h, s),
                            v_.data() + row_offset(seq, h, s), kt, cap_,
                            v_mean_.data() + (seq * heads_ + h) * d_, count, traffic);
      }
      ++len_[seq];
    }
  }

  /// Forgets sequence `seq` (length 0, v_mean 0); capacity is kept.
  void reset(std::size_t seq) {
    check_seq(seq, "reset");
    len_[seq] = 0;
    for (std::size_t i = 0; i < heads_ * d_; ++i) v_mean_[seq * heads_ * d_ + i] = 0.0f;
  }

  rows_view<const T> keys(std::size_t seq, std::size_t h) const {
    check_head(seq, h);
    return {k_.data() + row_offset(seq, h, 0), len_[seq], d_, d_};
  }
  rows_view<const T> values(std::size_t seq, std::size_t h) const {
    check_head(seq, h);
    return {v_.data() + row_offset(seq, h, 0), len_[seq], d_, d_};
  }
  /// Dimension-major keys; throws if the cache was built with keep_kt = false.
  cols_view<const T> keys_t(std::size_t seq, std::size_t h) const {
    check_head(seq, h);
    if (!keep_kt_) detail::fail("kv_cache::keys_t: this cache was built without Kt (keep_kt = false)");
    return {kt_.data() + (seq * heads_ + h) * d_ * cap_, d_, len_[seq], cap_};
  }
  const float* v_mean(std::size_t seq, std::size_t h) const {
    check_head(seq, h);
    return v_mean_.data() + (seq * heads_ + h) * d_;
  }
  /// Everything a SparQ step reads for KV head h of sequence seq.
  kv_head_view<const T> head(std::size_t seq, std::size_t h) const {
    return {keys(seq, h), keys_t(seq, h), values(seq, h), v_mean(seq, h)};
  }

 private:
  std::size_t row_offset(std::size_t seq, std::size_t h, std::size_t s) const noexcept {
    return ((seq * heads_ + h) * cap_ + s) * d_;
  }
  void check_seq(std::size_t seq, const char* what) const {
    if (seq >= batch_)
      detail::fail("kv_cache::", what, ": seq = ", seq, "; allowed: 0 <= seq < batch (", batch_, ")");
  }
  void check_head(std::size_t seq, std::size_t h) const {
    check_seq(seq, "view");
    if (h >= heads_)
      detail::fail("kv_cache: kv head = ", h, "; allowed: 0 <= head < kv_heads (", heads_, ")");
  }

  // Runs in the first member's initializer, before any member allocates; returns batch.
  static std::size_t checked_sizes(std::size_t batch, std::size_t kv_heads, std::size_t capacity,
                                   std::size_t head_dim) {
    if (batch == 0) detail::fail("kv_cache: batch = 0; allowed: >= 1");
    if (kv_heads == 0) detail::fail("kv_cache: kv_heads = 0; allowed: >= 1");
    if (capacity == 0 || capacity > max_positions)
      detail::fail("kv_cache: capacity = ", capacity, "; allowed: 1..", max_positions,
                   " (max_positions: positions are 32-bit)");
    if (head_dim == 0) detail::fail("kv_cache: head_dim = 0; allowed: >= 1");
    detail::checked_product("kv_cache: batch x kv_heads x capacity x head_dim x sizeof(T)", batch,
                            kv_heads, capacity, head_dim, sizeof(T));
    detail::checked_product("kv_cache: batch x sizeof(length)", batch, sizeof(std::size_t));
    return batch;
  }

  std::size_t batch_, heads_, cap_, d_;
  bool keep_kt_;
  Alloc alloc_;
  std::vector<T, value_alloc> k_, kt_, v_;
  std::vector<float, float_alloc> v_mean_;
  std::vector<std::size_t> len_;
};

}  // namespace sparq
