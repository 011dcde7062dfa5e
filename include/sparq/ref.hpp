#pragma once
/// \file ref.hpp
/// Reference oracles in plain float64 code, written from docs/sparq-semantics.md and sharing
/// nothing with the SIMD kernels (no top_k, no online softmax): selections use std::sort with
/// the spec's tie rule. Slow by design; for tests, and for engines validating an integration.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <numeric>
#include <vector>

#include "config.hpp"
#include "dtype.hpp"
#include "view.hpp"

namespace sparq::ref {

/// Indices of the k largest values (ties: lower index), ascending.
inline std::vector<std::uint32_t> top_k(const std::vector<double>& x, std::size_t k) {
  std::vector<std::uint32_t> idx(x.size());
  std::iota(idx.begin(), idx.end(), 0u);
  // Descending, NaN below everything (as sparq::top_k); stable, so lower index wins ties.
  std::stable_sort(idx.begin(), idx.end(), [&](std::uint32_t a, std::uint32_t b) {
    if (std::isnan(x[b])) return !std::isnan(x[a]);
    if (std::isnan(x[a])) return false;
    return x[a] > x[b];
  });
  idx.resize(std::min(k, idx.size()));
  std::sort(idx.begin(), idx.end());
  return idx;
}

inline std::vector<double> softmax(const std::vector<double>& logits) {
  double m = -std::numeric_limits<double>::infinity();
  for (double l : logits) m = std::max(m, l);
  std::vector<double> p(logits.size());
  double z = 0;
  for (std::size_t i = 0; i < p.size(); ++i) z += p[i] = std::exp(logits[i] - m);
  for (double& v : p) v /= z;
  return p;
}

/// scale / sqrt(coverage) for one head q_h ([d]), coverage = the L1 share of q_h on i1.
/// A zero q_h counts as full coverage; zero coverage uses temperature 1 (its logits are 0).
inline double temperature_multiplier(const float* qh, std::size_t d,
                                     const std::vector<std::uint32_t>& i1, double scale) {
  double total = 0, seen = 0;
  for (std::size_t i = 0; i < d; ++i) total += std::fabs(double(qh[i]));
  for (auto i : i1) seen += std::fabs(double(qh[i]));
  const double cov = total > 0 ? seen / total : 1.0;
  return cov > 0 ? scale / std::sqrt(cov) : scale;
}

/// Dense attention of g heads, q: [g][d]; returns [g][d].
template <class T>
std::vector<double> dense(const float* q, std::size_t g, rows_view<const T> k,
                          rows_view<const T> v, double scale) {
  const std::size_t S = k.length, d = k.dim;
  std::vector<double> out(g * d, 0.0);
  for (std::size_t h = 0; h < g; ++h) {
    std::vector<double> logit(S);
    for (std::size_t s = 0; s < S; ++s) {
      double acc = 0;
      for (std::size_t i = 0; i < d; ++i) acc += double(q[h * d + i]) * to_float(k.row(s)[i]);
      logit[s] = acc * scale;
    }
    const auto p = softmax(logit);
    for (std::size_t s = 0; s < S; ++s)
      for (std::size_t i = 0; i < d; ++i) out[h * d + i] += p[s] * to_float(v.row(s)[i]);
  }
  return out;
}

/// Everything the spec defines for one SparQ step, in float64.
struct sparq_result {
  std::vector<double> out;                ///< [g][d]
  std::vector<std::uint32_t> components;  ///< i1 (empty when k >= S)
  std::vector<std::uint32_t> positions;   ///< i2
  std::vector<double> alpha;              ///< [g]
  std::vector<double> shat;               ///< [g][S] approximate weights (empty when k >= S)
  std::vector<double> sel;                ///< [S] group sum of shat (empty when k >= S)
};

/// The SparQ step of docs/sparq-semantics.md. Reads K rows only (Kt holds the same values).
template <class T>
sparq_result sparq(const float* q, std::size_t g, kv_head_view<const T> kv, const config& cfg) {
  const std::size_t S = kv.length(), d = kv.dim(), r = cfg.rank;
  const double scale = cfg.scale_for(d);
  sparq_result res;
  if (cfg.top_k >= S) {
    res.out = dense(q, g, kv.k, kv.v, scale);
    res.positions.resize(S);
    std::iota(res.positions.begin(), res.positions.end(), 0u);
    res.alpha.assign(g, 1.0);
    return res;
  }
  // 1. components
  std::vector<double> a(d, 0.0);
  for (std::size_t h = 0; h < g; ++h)
    for (std::size_t i = 0; i < d; ++i) a[i] += std::fabs(double(q[h * d + i]));
  res.components = top_k(a, r);
  // 2. approximate scores
  res.shat.assign(g * S, 0.0);
  res.sel.assign(S, 0.0);
  for (std::size_t h = 0; h < g; ++h) {
    const double mult = temperature_multiplier(q + h * d, d, res.components, scale);
    std::vector<double> logit(S);
    for (std::size_t s = 0; s < S; ++s) {
      double acc = 0;
      for (auto i : res.components) acc += double(q[h * d + i]) * to_float(kv.k.row(s)[i]);
      logit[s] = acc * mult;
    }
    const auto p = softmax(logit);
    for (std::size_t s = 0; s < S; ++s) {
      res.shat[h * S + s] = p[s];
      res.sel[s] += p[s];
    }
  }
  // 3. positions: the window, then the best of the rest
  const std::size_t rest = S - cfg.local;
  res.positions = top_k(std::vector<double>(res.sel.begin(), res.sel.begin() + rest),
                        cfg.top_k - cfg.local);
  for (std::size_t s = rest; s < S; ++s) res.positions.push_back(static_cast<std::uint32_t>(s));
  // 4. exact attention on the chosen rows; 5. reallocation
  res.out.assign(g * d, 0.0);
  res.alpha.assign(g, 0.0);
  for (std::size_t h = 0; h < g; ++h) {
    std::vector<double> logit;
    for (auto s : res.positions) {
      double acc = 0;
      for (std::size_t i = 0; i < d; ++i) acc += double(q[h * d + i]) * to_float(kv.k.row(s)[i]);
      logit.push_back(acc * scale);
    }
    const auto w = softmax(logit);
    for (std::size_t j = 0; j < res.positions.size(); ++j) {
      for (std::size_t i = 0; i < d; ++i)
        res.out[h * d + i] += w[j] * to_float(kv.v.row(res.positions[j])[i]);
      res.alpha[h] += res.shat[h * S + res.positions[j]];
    }
    if (cfg.reallocate) {
      std::vector<double> mean(d, 0.0);
      for (std::size_t s = 0; s < S; ++s)
        for (std::size_t i = 0; i < d; ++i) mean[i] += to_float(kv.v.row(s)[i]);
      for (std::size_t i = 0; i < d; ++i)
        res.out[h * d + i] =
            res.alpha[h] * res.out[h * d + i] + (1 - res.alpha[h]) * (mean[i] / double(S));
    }
  }
  return res;
}

}  // namespace sparq::ref
