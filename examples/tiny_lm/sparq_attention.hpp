// sparq attention backends for tiny_lm: the model's decode attention served from a
// sparq::kv_cache, either densely (sparq::dense_step) or with SparQ (sparq::step).
//
// Both keep one cache per layer (batch 1, n_kv_heads heads, capacity max_positions, head_dim
// d) and call the kernel once per KV head with the group's query heads, which are contiguous
// in q / out ([n_heads][d], head h in group h / group). The cache is a contiguous
// sparq::kv_cache<T>, or with --page-size P a sparq::paged_kv_cache<T> whose pages are
// scattered through its pool (the kernels give the same bits either way). Workspaces are
// planned once in the constructor, so attend never allocates.
#pragma once

#include "attention.hpp"

#include <sparq/sparq.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace tiny_lm {

/// Storage type of the sparq KV cache (fp32 accumulation always).
enum class kv_dtype { f32, f16, bf16 };

inline const char* kv_dtype_name(kv_dtype t) {
    return t == kv_dtype::f32 ? "f32" : t == kv_dtype::f16 ? "f16" : "bf16";
}

/// SparQ settings as the command line gives them: a sparq::decode_policy (r; k fixed, or
/// k = clamp(round(top_k_fraction * S), top_k_min, top_k_max) as S grows; l = floor(
/// local_fraction * k); reallocate; dense below a length), plus an optional fixed l.
/// The defaults here are the command line's: r 16, fixed k 128, k >= 1, l = k/4.
struct sparq_settings {
    sparq::decode_policy policy = default_policy();
    long local = -1;  ///< >= 0: fixed l (clamped to k) instead of policy.local_fraction * k
    std::size_t page_size = 0;  ///< > 0: paged KV cache with pages of this many tokens

    static sparq::decode_policy default_policy() {
        sparq::decode_policy p;
        p.rank = 16;
        p.top_k_fraction = 0.0;
        p.top_k = 128;
        p.top_k_min = 1;
        p.local_fraction = 0.25;
        return p;
    }

    /// The step config for S cached positions (top_k >= S: the step is exact dense attention).
    sparq::config resolve(std::size_t S) const {
        sparq::config c = policy.resolve(S);
        if (local >= 0) c.local = std::min(static_cast<std::size_t>(local), c.top_k);
        return c;
    }
};

/// Elements read per KV head, summed over every attend() since reset(), by the formulas of
/// docs/sparq-semantics.md ("What a step reads"): what this run would have read densely, and
/// what it read. Their ratio is the attention-transfer compression of the run.
struct transfer_tally {
    double dense_elements = 0.0;
    double actual_elements = 0.0;
    double ratio() const { return dense_elements > 0 ? actual_elements / dense_elements : 1.0; }
};

namespace detail {

inline void check_shape(const attention_shape& s, const char* who) {
    if (s.n_layers <= 0 || s.n_heads <= 0 || s.n_kv_heads <= 0 || s.head_dim <= 0 ||
        s.max_positions <= 0 || s.n_heads % s.n_kv_heads)
        throw std::invalid_argument(std::string(who) + ": invalid attention_shape");
}

/// Sequence 0's K and V rows of KV head h, from either cache kind.
template <class T>
sparq::rows_view<const T> key_rows(const sparq::kv_cache<T>& c, std::size_t h) { return c.keys(0, h); }
template <class T>
sparq::rows_view<const T> value_rows(const sparq::kv_cache<T>& c, std::size_t h) { return c.values(0, h); }
template <class T>
sparq::paged_rows_view<const T> key_rows(const sparq::paged_kv_cache<T>& c, std::size_t h) { return c.head(0, h).k; }
template <class T>
sparq::paged_rows_view<const T> value_rows(const sparq::paged_kv_cache<T>& c, std::size_t h) { return c.head(0, h).v; }

template <class Cache>
struct is_paged : std::false_type {};
template <class T>
struct is_paged<sparq::paged_kv_cache<T>> : std::true_type {};

/// One cache per layer, batch 1: Cache is sparq::kv_cache<T> or sparq::paged_kv_cache<T>.
template <class Cache>
class layer_caches {
public:
    layer_caches(const attention_shape& s, bool keep_kt, std::size_t page_size) {
        const auto H = static_cast<std::size_t>(s.n_kv_heads), cap = static_cast<std::size_t>(s.max_positions),
                   d = static_cast<std::size_t>(s.head_dim);
        caches_.reserve(static_cast<std::size_t>(s.n_layers));
        for (int l = 0; l < s.n_layers; ++l) {
            if constexpr (!is_paged<Cache>::value) {
                (void)page_size;
                caches_.emplace_back(1, H, cap, d, keep_kt);
            } else {
                caches_.emplace_back(1, H, (cap + page_size - 1) / page_size, page_size, d, keep_kt);
                caches_.back().shuffle_free_pages(static_cast<std::uint64_t>(l) + 1);  // scattered pages
            }
        }
    }
    void reset() {
        for (auto& c : caches_) c.reset(0);
    }
    Cache& operator[](int layer) { return caches_.at(static_cast<std::size_t>(layer)); }
    std::size_t bytes() const {
        std::size_t b = 0;
        for (const auto& c : caches_) b += c.bytes();
        return b;
    }

private:
    std::vector<Cache> caches_;
};

}  // namespace detail

/// sparq::dense_step over a sparq::kv_cache<T> or paged_kv_cache<T> (no Kt kept): shows that
/// sparq's dense path reproduces the model (fp32 storage: the example's dense_attention up to
/// summation order).
template <class T, class Cache = sparq::kv_cache<T>>
class sparq_dense_attention final : public attention_backend {
public:
    explicit sparq_dense_attention(const attention_shape& shape, std::size_t page_size = 0)
        : shape_((detail::check_shape(shape, "sparq_dense_attention"), shape)),
          group_(static_cast<std::size_t>(shape.n_heads / shape.n_kv_heads)),
          d_(static_cast<std::size_t>(shape.head_dim)),
          caches_(shape, /*keep_kt=*/false, page_size),
          scratch_(sparq::dense_workspace_bytes(group_, d_)) {}

    void reset() override { caches_.reset(); }

    void append(int layer, const float* k, const float* v) override { caches_[layer].append(0, k, v); }

    void attend(int layer, const float* q, float* out) override {
        const Cache& c = caches_[layer];
        const sparq::workspace ws{scratch_.data(), scratch_.size()};
        for (std::size_t h = 0; h < c.kv_heads(); ++h)
            sparq::dense_step<T>(q + h * group_ * d_, group_, detail::key_rows(c, h), detail::value_rows(c, h),
                                 shape_.scale, ws, out + h * group_ * d_);
    }

    std::size_t cache_bytes() const { return caches_.bytes(); }

private:
    attention_shape shape_;
    std::size_t group_, d_;
    detail::layer_caches<Cache> caches_;
    std::vector<unsigned char> scratch_;
};

/// SparQ decode attention: sparq::step per KV head, with k (and l) possibly following the
/// sequence length (sparq::decode_policy). When k >= S the step is exact dense attention;
/// below policy.dense_below positions it runs sparq::dense_step instead.
template <class T, class Cache = sparq::kv_cache<T>>
class sparq_attention final : public attention_backend {
public:
    sparq_attention(const attention_shape& shape, const sparq_settings& settings)
        : shape_((detail::check_shape(shape, "sparq_attention"), shape)),
          settings_(settings),
          group_(static_cast<std::size_t>(shape.n_heads / shape.n_kv_heads)),
          d_(static_cast<std::size_t>(shape.head_dim)),
          caches_(shape, /*keep_kt=*/true, settings.page_size) {
        settings_.policy.scale = shape.scale;
        settings_.policy.validate(d_);  // throws sparq::error naming the bad field
        // One workspace serves every step with S <= capacity (its size depends on g, S, d, r),
        // and the dense steps below policy.dense_below too.
        const std::size_t cap = static_cast<std::size_t>(shape.max_positions);
        scratch_.resize(std::max(sparq::step_workspace_bytes(group_, cap, d_, settings_.resolve(cap)),
                                 sparq::dense_workspace_bytes(group_, d_)));
    }

    void reset() override {
        caches_.reset();
        tally_ = {};
    }

    void append(int layer, const float* k, const float* v) override { caches_[layer].append(0, k, v); }

    void attend(int layer, const float* q, float* out) override {
        const Cache& c = caches_[layer];
        const std::size_t S = c.length(0);
        const sparq::workspace ws{scratch_.data(), scratch_.size()};
        const bool use_dense = settings_.policy.use_dense(S);
        const sparq::config cfg = settings_.resolve(S);
        for (std::size_t h = 0; h < c.kv_heads(); ++h) {
            if (use_dense)
                sparq::dense_step<T>(q + h * group_ * d_, group_, detail::key_rows(c, h), detail::value_rows(c, h),
                                     cfg.scale, ws, out + h * group_ * d_);
            else
                sparq::step<T>(q + h * group_ * d_, group_, c.head(0, h), cfg, ws, out + h * group_ * d_);
        }
        // Transfers (elements per KV head, new k/v write included), as in the spec.
        const double Sd = static_cast<double>(S), dd = static_cast<double>(d_);
        const double dense = 2.0 * Sd * dd + 2.0 * dd;
        double actual = dense;  // dense step, or k >= S: the step reads what dense reads
        if (!use_dense && cfg.top_k < S)
            actual = Sd * static_cast<double>(cfg.rank) + 2.0 * static_cast<double>(cfg.top_k) * dd +
                     2.0 * dd + (cfg.reallocate ? 2.0 * dd : 0.0);
        const double heads = static_cast<double>(c.kv_heads());
        tally_.dense_elements += heads * dense;
        tally_.actual_elements += heads * actual;
    }

    const transfer_tally& transfers() const { return tally_; }
    std::size_t cache_bytes() const { return caches_.bytes(); }

private:
    attention_shape shape_;
    sparq_settings settings_;
    std::size_t group_, d_;
    detail::layer_caches<Cache> caches_;
    std::vector<unsigned char> scratch_;
    transfer_tally tally_;
};

/// The backend the command line names: "sparq-dense" or "sparq", with the cache stored as
/// `dtype`, paged when settings.page_size > 0. (The example's own "dense" backend is
/// tiny_lm::dense_attention.)
inline std::unique_ptr<attention_backend> make_sparq_backend(const std::string& kind, kv_dtype dtype,
                                                             const attention_shape& shape,
                                                             const sparq_settings& settings) {
    auto make = [&](auto tag) -> std::unique_ptr<attention_backend> {
        using T = decltype(tag);
        using paged = sparq::paged_kv_cache<T>;
        const std::size_t P = settings.page_size;
        if (kind == "sparq-dense" && P == 0) return std::make_unique<sparq_dense_attention<T>>(shape);
        if (kind == "sparq-dense") return std::make_unique<sparq_dense_attention<T, paged>>(shape, P);
        if (kind == "sparq" && P == 0) return std::make_unique<sparq_attention<T>>(shape, settings);
        if (kind == "sparq") return std::make_unique<sparq_attention<T, paged>>(shape, settings);
        throw std::invalid_argument("unknown attention backend '" + kind + "'");
    };
    switch (dtype) {
        case kv_dtype::f32: return make(float{});
        case kv_dtype::f16: return make(sparq::f16{});
        case kv_dtype::bf16: return make(sparq::bf16{});
    }
    throw std::invalid_argument("unknown kv dtype");
}

/// The run's transfer tally if `attn` is a sparq_attention, else nullptr.
inline const transfer_tally* transfers_of(const attention_backend& attn) {
    if (auto* a = dynamic_cast<const sparq_attention<float>*>(&attn)) return &a->transfers();
    if (auto* a = dynamic_cast<const sparq_attention<sparq::f16>*>(&attn)) return &a->transfers();
    if (auto* a = dynamic_cast<const sparq_attention<sparq::bf16>*>(&attn)) return &a->transfers();
    using namespace sparq;
    if (auto* a = dynamic_cast<const sparq_attention<float, paged_kv_cache<float>>*>(&attn)) return &a->transfers();
    if (auto* a = dynamic_cast<const sparq_attention<f16, paged_kv_cache<f16>>*>(&attn)) return &a->transfers();
    if (auto* a = dynamic_cast<const sparq_attention<bf16, paged_kv_cache<bf16>>*>(&attn)) return &a->transfers();
    return nullptr;
}

}  // namespace tiny_lm
