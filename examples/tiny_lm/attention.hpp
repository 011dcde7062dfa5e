// The seam between the transformer and decode attention. The model calls exactly two
// functions per layer per token, so a different KV cache / attention kernel (sparq's dense
// step, sparq's SparQ step) replaces dense_attention without touching the model.
#pragma once

#include "eigen.hpp"

#include <algorithm>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <vector>

namespace tiny_lm {

/// Sizes a backend needs to allocate its cache once, up front.
struct attention_shape {
    int n_layers = 0;
    int n_heads = 0;        ///< query heads; query head h reads KV head h / (n_heads / n_kv_heads)
    int n_kv_heads = 0;
    int head_dim = 0;
    int max_positions = 0;  ///< cache capacity per layer, in tokens
    float scale = 0.0f;     ///< softmax scale (the model's exact value, 1/sqrt(head_dim) here)
};

/// Decode attention for one sequence, one token at a time.
///
/// Call protocol (what the model guarantees): after reset(), for each position p = 0, 1, ...
/// and for each layer in order 0 .. n_layers-1, the model calls append(layer, k, v) once and
/// then attend(layer, q, out) once. So when attend runs, the layer's cache holds positions
/// 0 .. p, the current token included (causal attention over p + 1 positions); there is no
/// mask to apply. Layers are independent caches.
///
/// All vectors are fp32, contiguous, head-major; RoPE has already been applied to q and k.
class attention_backend {
public:
    virtual ~attention_backend() = default;

    /// Forgets every cached position of every layer (start of a new sequence).
    virtual void reset() = 0;

    /// Appends the current token's keys and values to `layer`'s cache.
    /// k, v: [n_kv_heads][head_dim], fp32. Only read during the call.
    virtual void append(int layer, const float* k, const float* v) = 0;

    /// out[h] = softmax(scale · q[h]·K[g(h)]ᵀ) · V[g(h)] over every position cached in `layer`,
    /// with g(h) = h / (n_heads / n_kv_heads).
    /// q: [n_heads][head_dim], fp32 (read). out: [n_heads][head_dim], fp32 (written).
    virtual void attend(int layer, const float* q, float* out) = 0;
};

/// Plain dense fp32 decode attention: the phase-1 baseline and the accuracy reference for
/// whatever replaces it. Allocates its whole cache in the constructor; append/attend never
/// allocate.
class dense_attention final : public attention_backend {
public:
    explicit dense_attention(const attention_shape& shape)
        : shape_(shape), group_(shape.n_kv_heads > 0 ? shape.n_heads / shape.n_kv_heads : 0) {
        if (shape.n_layers <= 0 || shape.n_heads <= 0 || shape.n_kv_heads <= 0 ||
            shape.head_dim <= 0 || shape.max_positions <= 0 || shape.n_heads % shape.n_kv_heads)
            throw std::invalid_argument("dense_attention: invalid attention_shape");
        // Each (layer, kv head) owns a contiguous [max_positions][head_dim] block, so the
        // S cached rows of one head form one matrix Eigen can multiply without strides.
        const std::size_t per_layer = static_cast<std::size_t>(shape.n_kv_heads) *
                                      static_cast<std::size_t>(shape.max_positions) *
                                      static_cast<std::size_t>(shape.head_dim);
        k_.assign(per_layer * static_cast<std::size_t>(shape.n_layers), 0.0f);
        v_.assign(k_.size(), 0.0f);
        length_.assign(static_cast<std::size_t>(shape.n_layers), 0);
        scores_.resize(shape.max_positions, group_);
    }

    void reset() override { std::fill(length_.begin(), length_.end(), 0); }

    void append(int layer, const float* k, const float* v) override {
        int& n = length_.at(static_cast<std::size_t>(layer));
        if (n >= shape_.max_positions)
            throw std::length_error("dense_attention: layer " + std::to_string(layer) +
                                    " cache is full (" + std::to_string(shape_.max_positions) +
                                    " positions)");
        const int d = shape_.head_dim;
        for (int g = 0; g < shape_.n_kv_heads; ++g) {
            const std::size_t row = offset(layer, g) + static_cast<std::size_t>(n) * static_cast<std::size_t>(d);
            std::copy(k + g * d, k + (g + 1) * d, k_.begin() + static_cast<std::ptrdiff_t>(row));
            std::copy(v + g * d, v + (g + 1) * d, v_.begin() + static_cast<std::ptrdiff_t>(row));
        }
        ++n;
    }

    void attend(int layer, const float* q, float* out) override {
        using row_major = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
        const int s = length_.at(static_cast<std::size_t>(layer));
        if (s == 0) throw std::logic_error("dense_attention: attend before any append");
        const int d = shape_.head_dim;
        for (int g = 0; g < shape_.n_kv_heads; ++g) {
            Eigen::Map<const row_major> keys(k_.data() + offset(layer, g), s, d);
            Eigen::Map<const row_major> values(v_.data() + offset(layer, g), s, d);
            // The group's query heads share K and V: one [S, d]·[d, group] product reads
            // each cached row once for all of them.
            Eigen::Map<const row_major> queries(q + g * group_ * d, group_, d);
            Eigen::Map<row_major> result(out + g * group_ * d, group_, d);

            auto p = scores_.topRows(s);
            p.noalias() = (keys * queries.transpose()) * shape_.scale;
            for (int h = 0; h < group_; ++h) {
                auto col = p.col(h);
                // Subtract the max so exp never overflows; the result is unchanged.
                col.array() = (col.array() - col.maxCoeff()).exp();
                col /= col.sum();
            }
            result.noalias() = p.transpose() * values;
        }
    }

private:
    attention_shape shape_;
    int group_;
    std::vector<float> k_;  ///< [layer][kv head][position][head_dim]
    std::vector<float> v_;  ///< same layout as k_
    std::vector<int> length_;  ///< cached positions per layer
    Eigen::MatrixXf scores_;   ///< [max_positions][group], column-major: one column per head

    std::size_t offset(int layer, int kv_head) const {
        return (static_cast<std::size_t>(layer) * static_cast<std::size_t>(shape_.n_kv_heads) +
                static_cast<std::size_t>(kv_head)) *
               static_cast<std::size_t>(shape_.max_positions) * static_cast<std::size_t>(shape_.head_dim);
    }
};

}  // namespace tiny_lm
