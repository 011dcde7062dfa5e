#pragma once
/// \file evaluate.hpp
/// The measuring core of sparq-eval (also used by tests/test_trace_accuracy.cpp so the
/// regression floors and the tool measure exactly the same thing).
///
/// For one loaded trace (sparq::io::trace) and one setting (r, k, l, reallocate, KV dtype):
///   - the trace's K/V rows are appended to a sparq::kv_cache<T> (batch 1, n_kv_heads,
///     capacity S) in storage type T, token by token as a decode loop would;
///   - sparq::checked_step runs once per KV head with the group's query heads (query head h
///     uses KV head h / gqa_group), counting bytes with one sparq::traffic_counter shared by
///     all KV heads; sparq::dense_step does the same for the dense baseline;
///   - the metrics are computed in float64 against the trace's exact dense output o.npy:
///       rel_err    ||y - o|| / ||o|| over all query heads together
///       cosine     <y, o> / (||y|| ||o||) over all query heads together
///       alpha      alpha_h per query head as the step returns it; alpha_mean its mean
///       recall     mean over query heads of the true attention mass on i2, the true mass
///                  being the exact softmax(scale q_h . K[s]) over all S in float64 from the
///                  trace's float32 q and K (not the rounded storage), so recall measures
///                  the selection against the model's real attention whatever the KV dtype
///       sparq_bytes / dense_bytes   bytes READ by the steps of all KV heads of the trace
///                  (traffic_counter: every stage, every arena), compression = their ratio.

#include <sparq/io/trace.hpp>
#include <sparq/sparq.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace sparq_eval {

struct setting {
  std::size_t rank = 16;
  std::size_t top_k = 128;
  std::size_t local = 32;
  bool reallocate = true;
  sparq::dtype kv_dtype = sparq::dtype::f32;
};

/// Everything measured for one trace x setting.
struct record {
  std::string trace;
  int layer = -1;
  std::size_t S = 0;
  setting cfg;
  double rel_err = 0, cosine = 0, alpha_mean = 0, recall = 0;
  std::size_t sparq_bytes = 0, dense_bytes = 0;
  double compression = 0;
  std::vector<double> alpha;                     ///< [n_q_heads]
  std::vector<double> recall_per_head;           ///< [n_q_heads]
  std::vector<float> y;                          ///< [n_q_heads][head_dim] SparQ output
  std::vector<std::vector<std::uint32_t>> i1;    ///< per KV head, ascending
  std::vector<std::vector<std::uint32_t>> i2;    ///< per KV head, ascending
};

/// The dense baseline of one trace at one KV dtype.
struct dense_record {
  sparq::dtype kv_dtype = sparq::dtype::f32;
  double rel_err = 0;       ///< sparq::dense_step output vs o.npy, all heads together
  double max_head_err = 0;  ///< max over heads of ||y_h - o_h|| / ||o_h||
  std::size_t bytes = 0;    ///< bytes read by dense_step over all KV heads
  std::vector<float> y;
};

inline double rel_l2(const std::vector<float>& y, const std::vector<double>& o) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < o.size(); ++i) {
    const double e = double(y[i]) - o[i];
    num += e * e;
    den += o[i] * o[i];
  }
  return std::sqrt(num) / std::sqrt(den);
}

inline double cosine(const std::vector<float>& y, const std::vector<double>& o) {
  double dot = 0, ny = 0, no = 0;
  for (std::size_t i = 0; i < o.size(); ++i) {
    dot += double(y[i]) * o[i];
    ny += double(y[i]) * double(y[i]);
    no += o[i] * o[i];
  }
  return dot / (std::sqrt(ny) * std::sqrt(no));
}

/// Evaluates SparQ and dense on one trace. Caches are built lazily, once per KV dtype.
class trace_evaluator {
 public:
  explicit trace_evaluator(const sparq::io::trace& t) : t_(t) {
    const auto& in = t.info;
    S_ = in.S, d_ = in.head_dim, nq_ = in.n_q_heads, nkv_ = in.n_kv_heads, g_ = in.gqa_group;
    // Token-major [S][n_kv][d] copies, the layout kv_cache::append takes.
    ktok_.resize(S_ * nkv_ * d_);
    vtok_.resize(S_ * nkv_ * d_);
    for (std::size_t j = 0; j < nkv_; ++j)
      for (std::size_t s = 0; s < S_; ++s)
        for (std::size_t i = 0; i < d_; ++i) {
          ktok_[(s * nkv_ + j) * d_ + i] = t.k_row(j, s)[i];
          vtok_[(s * nkv_ + j) * d_ + i] = t.v_row(j, s)[i];
        }
    // The exact attention distribution of every query head, float64 over all S.
    p_.assign(nq_ * S_, 0.0);
    const double scale = in.softmax_scale;
    for (std::size_t h = 0; h < nq_; ++h) {
      const std::size_t j = t.kv_head_of(h);
      double m = -INFINITY;
      for (std::size_t s = 0; s < S_; ++s) {
        double acc = 0;
        const float* k = t.k_row(j, s);
        for (std::size_t i = 0; i < d_; ++i) acc += double(t.q_head(h)[i]) * double(k[i]);
        p_[h * S_ + s] = acc * scale;
        m = std::max(m, p_[h * S_ + s]);
      }
      double z = 0;
      for (std::size_t s = 0; s < S_; ++s) z += p_[h * S_ + s] = std::exp(p_[h * S_ + s] - m);
      for (std::size_t s = 0; s < S_; ++s) p_[h * S_ + s] /= z;
    }
  }

  const sparq::io::trace& trace() const noexcept { return t_; }
  /// Exact float64 attention probability of query head h on position s.
  double true_prob(std::size_t h, std::size_t s) const noexcept { return p_[h * S_ + s]; }

  record run(const setting& st) {
    switch (st.kv_dtype) {
      case sparq::dtype::f16: return run_t(cache<sparq::f16>(f16_), st);
      case sparq::dtype::bf16: return run_t(cache<sparq::bf16>(bf16_), st);
      default: return run_t(cache<float>(f32_), st);
    }
  }

  dense_record dense(sparq::dtype dt) {
    switch (dt) {
      case sparq::dtype::f16: return dense_t(cache<sparq::f16>(f16_), dt);
      case sparq::dtype::bf16: return dense_t(cache<sparq::bf16>(bf16_), dt);
      default: return dense_t(cache<float>(f32_), dt);
    }
  }

  /// The KV cache in storage type T (built on first use).
  template <class T>
  const sparq::kv_cache<T>& kv() {
    if constexpr (std::is_same_v<T, sparq::f16>) return cache<T>(f16_);
    else if constexpr (std::is_same_v<T, sparq::bf16>) return cache<T>(bf16_);
    else return cache<T>(f32_);
  }

 private:
  template <class T>
  const sparq::kv_cache<T>& cache(std::unique_ptr<sparq::kv_cache<T>>& c) {
    if (!c) {
      c = std::make_unique<sparq::kv_cache<T>>(1, nkv_, S_, d_);
      // One append per token, as a decode loop fills the cache (v_mean is the running mean).
      for (std::size_t s = 0; s < S_; ++s)
        c->append(0, ktok_.data() + s * nkv_ * d_, vtok_.data() + s * nkv_ * d_);
    }
    return *c;
  }

  template <class T>
  record run_t(const sparq::kv_cache<T>& kv, const setting& st) {
    sparq::config cfg;
    cfg.rank = st.rank;
    cfg.top_k = st.top_k;
    cfg.local = st.local;
    cfg.reallocate = st.reallocate;
    cfg.scale = t_.info.softmax_scale;
    std::vector<std::byte> ws(sparq::step_workspace_bytes(g_, S_, d_, cfg));
    record rec;
    rec.trace = t_.info.id;
    rec.layer = t_.info.layer;
    rec.S = S_;
    rec.cfg = st;
    rec.y.assign(nq_ * d_, 0.0f);
    rec.alpha.assign(nq_, 0.0);
    rec.recall_per_head.assign(nq_, 0.0);
    sparq::traffic_counter traffic;
    for (std::size_t j = 0; j < nkv_; ++j) {
      const float* q = t_.q_head(j * g_);
      float* out = rec.y.data() + j * g_ * d_;
      const sparq::step_result res = sparq::checked_step<T>(
          q, g_, kv.head(0, j), cfg, sparq::workspace{ws.data(), ws.size()}, out, traffic);
      rec.i2.emplace_back(res.positions, res.positions + res.n_positions);
      if (res.components) rec.i1.emplace_back(res.components, res.components + res.n_components);
      else rec.i1.emplace_back();
      for (std::size_t hh = 0; hh < g_; ++hh) {
        const std::size_t h = j * g_ + hh;
        rec.alpha[h] = res.alpha[hh];
        double m = 0;
        for (std::size_t n = 0; n < res.n_positions; ++n) m += true_prob(h, res.positions[n]);
        rec.recall_per_head[h] = m;
      }
    }
    rec.sparq_bytes = bytes_read(traffic);
    rec.dense_bytes = dense_bytes<T>(kv);
    rec.compression = double(rec.sparq_bytes) / double(rec.dense_bytes);
    rec.rel_err = rel_l2(rec.y, t_.o);
    rec.cosine = cosine(rec.y, t_.o);
    for (std::size_t h = 0; h < nq_; ++h) {
      rec.alpha_mean += rec.alpha[h] / double(nq_);
      rec.recall += rec.recall_per_head[h] / double(nq_);
    }
    return rec;
  }

  static std::size_t bytes_read(const sparq::traffic_counter& c) {
    std::size_t b = 0;
    for (int a = 0; a < sparq::arena_count; ++a) b += c.bytes_read(static_cast<sparq::arena>(a));
    return b;
  }

  template <class T>
  std::size_t dense_bytes(const sparq::kv_cache<T>& kv) {
    const int i = static_cast<int>(sparq::dtype_of<T>::value);
    if (dense_bytes_[i] == 0) dense_bytes_[i] = dense_t(kv, sparq::dtype_of<T>::value).bytes;
    return dense_bytes_[i];
  }

  template <class T>
  dense_record dense_t(const sparq::kv_cache<T>& kv, sparq::dtype dt) {
    dense_record d;
    d.kv_dtype = dt;
    d.y.assign(nq_ * d_, 0.0f);
    std::vector<std::byte> ws(sparq::dense_workspace_bytes(g_, d_));
    sparq::traffic_counter traffic;
    for (std::size_t j = 0; j < nkv_; ++j)
      sparq::dense_step<T>(t_.q_head(j * g_), g_, kv.keys(0, j), kv.values(0, j),
                           t_.info.softmax_scale, sparq::workspace{ws.data(), ws.size()},
                           d.y.data() + j * g_ * d_, nullptr, traffic);
    d.bytes = bytes_read(traffic);
    d.rel_err = rel_l2(d.y, t_.o);
    for (std::size_t h = 0; h < nq_; ++h) {
      double num = 0, den = 0;
      for (std::size_t i = 0; i < d_; ++i) {
        const double o = t_.o[h * d_ + i], e = double(d.y[h * d_ + i]) - o;
        num += e * e;
        den += o * o;
      }
      d.max_head_err = std::max(d.max_head_err, std::sqrt(num / den));
    }
    return d;
  }

  const sparq::io::trace& t_;
  std::size_t S_ = 0, d_ = 0, nq_ = 0, nkv_ = 0, g_ = 1;
  std::vector<float> ktok_, vtok_;
  std::vector<double> p_;
  std::unique_ptr<sparq::kv_cache<float>> f32_;
  std::unique_ptr<sparq::kv_cache<sparq::f16>> f16_;
  std::unique_ptr<sparq::kv_cache<sparq::bf16>> bf16_;
  std::size_t dense_bytes_[3] = {0, 0, 0};
};

}  // namespace sparq_eval
