// tiny-code-lm: a llama-style byte-level decoder (pre-RMSNorm, RoPE rotate-half, GQA,
// SwiGLU, no biases, untied head), run one token at a time. Attention is delegated to an
// attention_backend so the KV cache and kernel can be swapped.
#pragma once

#include "attention.hpp"
#include "safetensors.hpp"

#include "eigen.hpp"

#include <cmath>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

namespace tiny_lm {

/// Hyper-parameters, read from config.json.
struct model_config {
    int vocab = 0;
    int d_model = 0;
    int n_layers = 0;
    int n_heads = 0;
    int n_kv_heads = 0;
    int head_dim = 0;
    int ffn_hidden = 0;
    int ctx = 0;
    double rope_theta = 0.0;
    float norm_eps = 0.0f;
    float softmax_scale = 0.0f;

    static model_config load(const std::string& path) {
        std::ifstream in(path, std::ios::binary);
        if (!in) throw std::runtime_error(path + ": cannot open file");
        const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        // Syntax errors throw sparq::io::format_error naming `path`, with line and column.
        const json_value doc = parse_json(text, path);
        if (!doc.is_object())
            throw std::runtime_error(path + ": not a JSON object but " + json_kind_name(doc.type));

        auto number = [&](const char* key) -> const json_value& {
            const json_value* v = doc.find(key);
            if (!v || !v->is_number())
                throw std::runtime_error(path + ": missing numeric field '" + key + "'");
            return *v;
        };
        auto integer = [&](const char* key) {
            const json_value& v = number(key);
            if (!v.integral || v.integer <= 0 || v.integer > (1 << 24))
                throw std::runtime_error(path + ": field '" + key + "' must be a positive integer");
            return static_cast<int>(v.integer);
        };
        model_config c;
        c.vocab = integer("vocab");
        c.d_model = integer("d_model");
        c.n_layers = integer("n_layers");
        c.n_heads = integer("n_heads");
        c.n_kv_heads = integer("n_kv_heads");
        c.head_dim = integer("head_dim");
        c.ffn_hidden = integer("ffn_hidden");
        c.ctx = integer("ctx");
        c.rope_theta = number("rope_theta").number;
        c.norm_eps = static_cast<float>(number("norm_eps").number);
        // softmax_scale is optional in llama-style configs; 1/sqrt(head_dim) is the default.
        const json_value* scale = doc.find("softmax_scale");
        c.softmax_scale = scale && scale->is_number()
                              ? static_cast<float>(scale->number)
                              : 1.0f / std::sqrt(static_cast<float>(c.head_dim));
        if (c.n_heads % c.n_kv_heads != 0)
            throw std::runtime_error(path + ": n_heads must be a multiple of n_kv_heads");
        if (c.head_dim % 2 != 0) throw std::runtime_error(path + ": head_dim must be even for RoPE");
        if (!(c.rope_theta > 0.0) || !(c.norm_eps > 0.0f) || !(c.softmax_scale > 0.0f))
            throw std::runtime_error(path + ": rope_theta, norm_eps, softmax_scale must be positive");
        return c;
    }
};

/// Linear weights keep the file's [out, in] layout, row-major, so y = W·x streams each row
/// contiguously.
using matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using vector = Eigen::VectorXf;

struct layer_weights {
    vector attn_norm;  ///< [d_model]
    matrix wq;         ///< [n_heads·head_dim, d_model]
    matrix wk;         ///< [n_kv_heads·head_dim, d_model]
    matrix wv;         ///< [n_kv_heads·head_dim, d_model]
    matrix wo;         ///< [d_model, n_heads·head_dim]
    vector mlp_norm;   ///< [d_model]
    matrix w1;         ///< gate [ffn_hidden, d_model]
    matrix w3;         ///< up   [ffn_hidden, d_model]
    matrix w2;         ///< down [d_model, ffn_hidden]
};

class model {
public:
    /// Loads `dir`/config.json and `dir`/model.safetensors; every weight is widened to fp32
    /// once here, so a token costs only fp32 matrix-vector products.
    static model load(const std::string& dir) {
        model m;
        m.config_ = model_config::load(dir + "/config.json");
        const model_config& c = m.config_;
        const safetensors_file file(dir + "/model.safetensors");

        auto load_matrix = [&](const std::string& name, int rows, int cols) {
            matrix w(rows, cols);
            file.load_f32(name, {rows, cols}, w.data());
            return w;
        };
        auto load_vector = [&](const std::string& name, int n) {
            vector w(n);
            file.load_f32(name, {n}, w.data());
            return w;
        };
        const int q_dim = c.n_heads * c.head_dim;
        const int kv_dim = c.n_kv_heads * c.head_dim;
        m.tok_emb_ = load_matrix("tok_emb.weight", c.vocab, c.d_model);
        for (int i = 0; i < c.n_layers; ++i) {
            const std::string p = "layers." + std::to_string(i) + ".";
            layer_weights l;
            l.attn_norm = load_vector(p + "attn_norm.weight", c.d_model);
            l.wq = load_matrix(p + "attn.wq.weight", q_dim, c.d_model);
            l.wk = load_matrix(p + "attn.wk.weight", kv_dim, c.d_model);
            l.wv = load_matrix(p + "attn.wv.weight", kv_dim, c.d_model);
            l.wo = load_matrix(p + "attn.wo.weight", c.d_model, q_dim);
            l.mlp_norm = load_vector(p + "mlp_norm.weight", c.d_model);
            l.w1 = load_matrix(p + "mlp.w1.weight", c.ffn_hidden, c.d_model);
            l.w3 = load_matrix(p + "mlp.w3.weight", c.ffn_hidden, c.d_model);
            l.w2 = load_matrix(p + "mlp.w2.weight", c.d_model, c.ffn_hidden);
            m.layers_.push_back(std::move(l));
        }
        m.norm_ = load_vector("norm.weight", c.d_model);
        m.lm_head_ = load_matrix("lm_head.weight", c.vocab, c.d_model);

        // cos/sin per (position, pair) computed once in double: the angle position·inv_freq
        // reaches ~2000 rad, where fp32 would lose ~1e-4 rad.
        const int half = c.head_dim / 2;
        m.rope_cos_.resize(static_cast<std::size_t>(c.ctx) * static_cast<std::size_t>(half));
        m.rope_sin_.resize(m.rope_cos_.size());
        for (int pos = 0; pos < c.ctx; ++pos)
            for (int j = 0; j < half; ++j) {
                const double inv_freq = std::pow(c.rope_theta, -2.0 * j / c.head_dim);
                const double angle = pos * inv_freq;
                const std::size_t at = static_cast<std::size_t>(pos) * static_cast<std::size_t>(half) +
                                       static_cast<std::size_t>(j);
                m.rope_cos_[at] = static_cast<float>(std::cos(angle));
                m.rope_sin_[at] = static_cast<float>(std::sin(angle));
            }

        m.x_.resize(c.d_model);
        m.h_.resize(c.d_model);
        m.q_.resize(q_dim);
        m.k_.resize(kv_dim);
        m.v_.resize(kv_dim);
        m.att_.resize(q_dim);
        m.gate_.resize(c.ffn_hidden);
        m.up_.resize(c.ffn_hidden);
        m.logits_.resize(c.vocab);
        return m;
    }

    const model_config& config() const { return config_; }

    /// What an attention_backend for this model must hold, for sequences up to
    /// `max_positions` tokens (at most config().ctx: RoPE tables stop there).
    attention_shape attention_shape_for(int max_positions) const {
        attention_shape s;
        s.n_layers = config_.n_layers;
        s.n_heads = config_.n_heads;
        s.n_kv_heads = config_.n_kv_heads;
        s.head_dim = config_.head_dim;
        s.max_positions = max_positions;
        s.scale = config_.softmax_scale;
        return s;
    }

    /// Runs byte `token` at `position` (0-based; positions must arrive in order 0, 1, ...
    /// since the backend appends). Returns the next-byte logits [vocab], valid until the
    /// next call. Allocates nothing.
    const vector& forward(int token, int position, attention_backend& attn) {
        const model_config& c = config_;
        if (token < 0 || token >= c.vocab) throw std::out_of_range("token out of range");
        if (position < 0 || position >= c.ctx) throw std::out_of_range("position beyond ctx");

        x_ = tok_emb_.row(token).transpose();
        for (int i = 0; i < c.n_layers; ++i) {
            const layer_weights& l = layers_[static_cast<std::size_t>(i)];

            rms_norm(x_, l.attn_norm, h_);
            q_.noalias() = l.wq * h_;
            k_.noalias() = l.wk * h_;
            v_.noalias() = l.wv * h_;
            apply_rope(q_.data(), c.n_heads, position);
            apply_rope(k_.data(), c.n_kv_heads, position);
            attn.append(i, k_.data(), v_.data());
            attn.attend(i, q_.data(), att_.data());
            x_.noalias() += l.wo * att_;

            rms_norm(x_, l.mlp_norm, h_);
            gate_.noalias() = l.w1 * h_;
            up_.noalias() = l.w3 * h_;
            // SwiGLU: silu(g)·u with silu(g) = g / (1 + e^-g).
            gate_.array() = gate_.array() / (1.0f + (-gate_.array()).exp()) * up_.array();
            x_.noalias() += l.w2 * gate_;
        }
        rms_norm(x_, norm_, h_);
        logits_.noalias() = lm_head_ * h_;
        return logits_;
    }

private:
    model_config config_;
    matrix tok_emb_;  ///< [vocab, d_model]
    std::vector<layer_weights> layers_;
    vector norm_;      ///< [d_model]
    matrix lm_head_;   ///< [vocab, d_model]
    std::vector<float> rope_cos_, rope_sin_;  ///< [ctx][head_dim/2]
    // Per-token scratch, sized at load so forward() never allocates.
    vector x_, h_, q_, k_, v_, att_, gate_, up_, logits_;

    model() = default;

    void rms_norm(const vector& x, const vector& weight, vector& out) const {
        const float mean_sq = x.squaredNorm() / static_cast<float>(x.size());
        const float inv = 1.0f / std::sqrt(mean_sq + config_.norm_eps);
        out = (x.array() * inv) * weight.array();
    }

    /// Rotate-half RoPE (Hugging Face Llama): pairs are (x[j], x[j + head_dim/2]), not
    /// adjacent elements.
    void apply_rope(float* heads, int n, int position) const {
        const int d = config_.head_dim;
        const int half = d / 2;
        const float* cs = rope_cos_.data() + static_cast<std::size_t>(position) * static_cast<std::size_t>(half);
        const float* sn = rope_sin_.data() + static_cast<std::size_t>(position) * static_cast<std::size_t>(half);
        for (int h = 0; h < n; ++h) {
            float* x = heads + h * d;
            for (int j = 0; j < half; ++j) {
                const float x1 = x[j];
                const float x2 = x[j + half];
                x[j] = x1 * cs[j] - x2 * sn[j];
                x[j + half] = x2 * cs[j] + x1 * sn[j];
            }
        }
    }
};

}  // namespace tiny_lm
