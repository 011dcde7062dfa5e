#pragma once
// Shared helpers for sparq's GoogleTest suite: seeded random data (normal, with a few heavy
// "outlier" channels as real K/V have), per-head storage with padded row strides and offset
// (misaligned) base pointers whose padding is poisoned with NaN, float64 oracles for the parts
// of a step given fixed selections, normalised errors, selection checks that respect the
// spec's rounding rule, and error-message checks.
//
// Everything here is plain float64 code written from docs/sparq-semantics.md; it shares
// nothing with the SIMD kernels.

#include <gtest/gtest.h>

#include <sparq/sparq.hpp>
#include <sparq/ref.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

namespace sparq_test {

using sparq::bf16;
using sparq::f16;

// ---------------------------------------------------------------------------------------------
// dtypes

template <class T>
const char* type_name() {
  return sparq::dtype_name(sparq::dtype_of<T>::value);
}

/// Names typed tests by dtype ("f32", "f16", "bf16") instead of 0, 1, 2.
struct dtype_names {
  template <class T>
  static std::string GetName(int) {
    return type_name<T>();
  }
};

using storage_types = ::testing::Types<float, f16, bf16>;

/// x rounded to storage type T and back (what a cache stores).
template <class T>
float stored(float x) {
  return sparq::to_float(sparq::from_float<T>(x));
}

// ---------------------------------------------------------------------------------------------
// Random data

struct rng {
  std::mt19937_64 gen;
  explicit rng(std::uint64_t seed) : gen(seed) {}
  float normal(float sd = 1.0f) { return std::normal_distribution<float>(0.0f, sd)(gen); }
  float uniform(float lo, float hi) { return std::uniform_real_distribution<float>(lo, hi)(gen); }
  std::size_t index(std::size_t n) { return std::uniform_int_distribution<std::size_t>(0, n - 1)(gen); }
};

/// [n][d] normal(0, 1) values where a few fixed channels (about d/16, at least one when d > 1)
/// are scaled up by 4..8: the heavy components real keys and queries have, which make the
/// choice of the r query components matter.
inline std::vector<float> random_rows(rng& r, std::size_t n, std::size_t d, float sd = 1.0f,
                                      std::uint64_t channel_seed = 7) {
  std::vector<float> mult(d, 1.0f);
  rng cr(channel_seed);
  const std::size_t heavy = d > 1 ? std::max<std::size_t>(1, d / 16) : 0;
  for (std::size_t j = 0; j < heavy; ++j) mult[cr.index(d)] = cr.uniform(4.0f, 8.0f);
  std::vector<float> x(n * d);
  for (std::size_t s = 0; s < n; ++s)
    for (std::size_t i = 0; i < d; ++i) x[s * d + i] = r.normal(sd) * mult[i];
  return x;
}

// ---------------------------------------------------------------------------------------------
// One KV head in caller-chosen layout

/// How a head's arrays are laid out: extra elements per K/V row and per Kt dimension row, and
/// an element offset of every base pointer (offset 1 makes it misaligned for any SIMD width).
struct layout {
  std::size_t row_pad = 0;
  std::size_t kt_pad = 0;
  std::size_t offset = 0;
};

inline std::vector<layout> test_layouts() {
  return {layout{0, 0, 0}, layout{3, 5, 1}, layout{16, 1, 7}};
}

/// K rows, Kt, V rows and v_mean of one KV head, in storage type T, built from fp32 data.
/// Padding and the elements before the base are NaN, so a kernel that reads outside the valid
/// region turns its output into NaN; the buffers end right after the last valid element, so
/// ASan catches reads past the end.
template <class T>
struct head_data {
  std::size_t S = 0, d = 0;
  layout lay;
  std::vector<T> kbuf, vbuf, ktbuf;
  std::vector<float> vmean;

  head_data(const std::vector<float>& K, const std::vector<float>& V, std::size_t S_,
            std::size_t d_, layout l = {})
      : S(S_), d(d_), lay(l) {
    const T nan = sparq::from_float<T>(std::numeric_limits<float>::quiet_NaN());
    const std::size_t rs = row_stride(), ks = kt_stride();
    kbuf.assign(lay.offset + (S - 1) * rs + d, nan);
    vbuf.assign(lay.offset + (S - 1) * rs + d, nan);
    ktbuf.assign(lay.offset + (d - 1) * ks + S, nan);
    std::vector<double> mean(d, 0.0);
    for (std::size_t s = 0; s < S; ++s)
      for (std::size_t i = 0; i < d; ++i) {
        const T kv = sparq::from_float<T>(K[s * d + i]);
        kbuf[lay.offset + s * rs + i] = kv;
        ktbuf[lay.offset + i * ks + s] = kv;
        vbuf[lay.offset + s * rs + i] = sparq::from_float<T>(V[s * d + i]);
        mean[i] += sparq::to_float(vbuf[lay.offset + s * rs + i]);
      }
    vmean.resize(d);
    for (std::size_t i = 0; i < d; ++i) vmean[i] = static_cast<float>(mean[i] / double(S));
  }

  std::size_t row_stride() const { return d + lay.row_pad; }
  std::size_t kt_stride() const { return S + lay.kt_pad; }

  sparq::rows_view<const T> k() const { return {kbuf.data() + lay.offset, S, d, row_stride()}; }
  sparq::rows_view<const T> v() const { return {vbuf.data() + lay.offset, S, d, row_stride()}; }
  sparq::cols_view<const T> kt() const { return {ktbuf.data() + lay.offset, d, S, kt_stride()}; }
  sparq::kv_head_view<const T> view() const { return {k(), kt(), v(), vmean.data()}; }

  double key(std::size_t s, std::size_t i) const { return sparq::to_float(k().row(s)[i]); }
  double value(std::size_t s, std::size_t i) const { return sparq::to_float(v().row(s)[i]); }
};

/// Random keys and values for S positions; queries are built separately.
template <class T>
head_data<T> random_head(rng& r, std::size_t S, std::size_t d, layout l = {}) {
  const auto K = random_rows(r, S, d);
  const auto V = random_rows(r, S, d, 1.0f, 11);
  return head_data<T>(K, V, S, d, l);
}

/// g query heads [g][d]; `peak` multiplies them so that scale*q.k spans several units and the
/// attention is peaked (the selection then matters for the output).
inline std::vector<float> random_queries(rng& r, std::size_t g, std::size_t d, float peak) {
  auto q = random_rows(r, g, d);
  for (float& x : q) x *= peak;
  return q;
}

// ---------------------------------------------------------------------------------------------
// Workspaces at a deliberately odd address

/// Owns step scratch; `data()` is offset by `misalign` bytes from the allocation.
struct scratch_buffer {
  std::vector<unsigned char> buf;
  std::size_t misalign;
  scratch_buffer(std::size_t bytes, std::size_t misalign_ = 3) : buf(bytes + misalign_), misalign(misalign_) {}
  sparq::workspace ws() { return {buf.data() + misalign, buf.size() - misalign}; }
};

// ---------------------------------------------------------------------------------------------
// float64 oracles for parts of a step, given fixed selections

/// softmax in float64 (the ref's, re-done here so this file stands alone).
inline std::vector<double> softmax64(const std::vector<double>& x) {
  double m = -std::numeric_limits<double>::infinity();
  for (double v : x) m = std::max(m, v);
  std::vector<double> p(x.size());
  double z = 0;
  for (std::size_t i = 0; i < x.size(); ++i) z += p[i] = std::exp(x[i] - m);
  for (double& v : p) v /= z;
  return p;
}

/// Exact attention of q ([g][d]) over the listed rows; out [g][d] and lse [g] (natural log).
template <class T>
void attend64(const float* q, std::size_t g, sparq::rows_view<const T> k, sparq::rows_view<const T> v,
              const std::vector<std::uint32_t>& pos, double scale, std::vector<double>& out,
              std::vector<double>& lse) {
  const std::size_t d = k.dim;
  out.assign(g * d, 0.0);
  lse.assign(g, 0.0);
  for (std::size_t h = 0; h < g; ++h) {
    std::vector<double> logit(pos.size());
    for (std::size_t j = 0; j < pos.size(); ++j) {
      double acc = 0;
      for (std::size_t i = 0; i < d; ++i) acc += double(q[h * d + i]) * sparq::to_float(k.row(pos[j])[i]);
      logit[j] = acc * scale;
    }
    double m = -std::numeric_limits<double>::infinity();
    for (double l : logit) m = std::max(m, l);
    double z = 0;
    for (double l : logit) z += std::exp(l - m);
    lse[h] = m + std::log(z);
    for (std::size_t j = 0; j < pos.size(); ++j) {
      const double w = std::exp(logit[j] - m) / z;
      for (std::size_t i = 0; i < d; ++i) out[h * d + i] += w * sparq::to_float(v.row(pos[j])[i]);
    }
  }
}

/// The approximate weights shat ([g][S]) and their group sum sel ([S]) for a given i1.
template <class T>
void approx64(const float* q, std::size_t g, sparq::kv_head_view<const T> kv, double scale,
              const std::vector<std::uint32_t>& i1, std::vector<double>& shat, std::vector<double>& sel) {
  const std::size_t S = kv.length(), d = kv.dim();
  shat.assign(g * S, 0.0);
  sel.assign(S, 0.0);
  for (std::size_t h = 0; h < g; ++h) {
    const double mult = sparq::ref::temperature_multiplier(q + h * d, d, i1, scale);
    std::vector<double> logit(S);
    for (std::size_t s = 0; s < S; ++s) {
      double acc = 0;
      for (auto i : i1) acc += double(q[h * d + i]) * sparq::to_float(kv.kt.dim_row(i)[s]);
      logit[s] = acc * mult;
    }
    const auto p = softmax64(logit);
    for (std::size_t s = 0; s < S; ++s) {
      shat[h * S + s] = p[s];
      sel[s] += p[s];
    }
  }
}

/// A whole SparQ step in float64 for given selections i1 (components) and i2 (positions).
struct given_result {
  std::vector<double> out, alpha, shat, sel, lse;
};
template <class T>
given_result sparq_given(const float* q, std::size_t g, sparq::kv_head_view<const T> kv,
                         const sparq::config& cfg, const std::vector<std::uint32_t>& i1,
                         const std::vector<std::uint32_t>& i2) {
  const std::size_t S = kv.length(), d = kv.dim();
  const double scale = cfg.scale_for(d);
  given_result res;
  attend64(q, g, kv.k, kv.v, i2, scale, res.out, res.lse);
  res.alpha.assign(g, 1.0);
  if (i2.size() >= S) return res;  // every position: dense, alpha = 1
  approx64(q, g, kv, scale, i1, res.shat, res.sel);
  std::vector<double> mean(d, 0.0);
  for (std::size_t s = 0; s < S; ++s)
    for (std::size_t i = 0; i < d; ++i) mean[i] += sparq::to_float(kv.v.row(s)[i]);
  for (std::size_t h = 0; h < g; ++h) {
    double a = 0;
    for (auto s : i2) a += res.shat[h * S + s];
    res.alpha[h] = a;
    if (cfg.reallocate)
      for (std::size_t i = 0; i < d; ++i)
        res.out[h * d + i] = a * res.out[h * d + i] + (1 - a) * mean[i] / double(S);
  }
  return res;
}

// ---------------------------------------------------------------------------------------------
// Errors and selections

/// ||got - want||_2 / ||want||_2 (absolute when want is 0). NaN in got gives +inf.
inline double rel_l2(const float* got, const std::vector<double>& want) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    if (!std::isfinite(got[i])) return std::numeric_limits<double>::infinity();
    num += (got[i] - want[i]) * (got[i] - want[i]);
    den += want[i] * want[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

inline double max_abs_diff(const float* got, const std::vector<double>& want) {
  double m = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    if (!std::isfinite(got[i])) return std::numeric_limits<double>::infinity();
    m = std::max(m, std::fabs(got[i] - want[i]));
  }
  return m;
}

/// True when the k-th and (k+1)-th largest of vals differ by more than rel (relative to the
/// k-th): then any correct implementation must pick exactly the oracle's set, whatever its
/// summation order. When false, two candidates differ only by rounding and may swap.
inline bool clear_gap(std::vector<double> vals, std::size_t k, double rel) {
  if (k == 0 || k >= vals.size()) return true;
  std::sort(vals.begin(), vals.end(), std::greater<double>());
  return vals[k - 1] - vals[k] > rel * std::fabs(vals[k - 1]);
}

/// Checks that `chosen` (ascending, unique, count k) is a top-k of vals up to rounding: every
/// chosen value is at least every rejected value, less a relative tolerance rel.
inline ::testing::AssertionResult valid_top_k(const std::vector<double>& vals,
                                              const std::vector<std::uint32_t>& chosen,
                                              std::size_t k, double rel) {
  const std::size_t n = vals.size();
  if (chosen.size() != std::min(k, n))
    return ::testing::AssertionFailure() << "chose " << chosen.size() << " of " << n << ", want " << std::min(k, n);
  std::vector<char> in(n, 0);
  for (std::size_t j = 0; j < chosen.size(); ++j) {
    if (chosen[j] >= n) return ::testing::AssertionFailure() << "index " << chosen[j] << " out of range " << n;
    if (j > 0 && chosen[j] <= chosen[j - 1])
      return ::testing::AssertionFailure() << "indices not strictly ascending at " << j;
    in[chosen[j]] = 1;
  }
  double min_in = std::numeric_limits<double>::infinity(), max_out = -std::numeric_limits<double>::infinity();
  for (std::size_t i = 0; i < n; ++i) {
    if (in[i]) min_in = std::min(min_in, vals[i]);
    else max_out = std::max(max_out, vals[i]);
  }
  if (min_in < max_out - rel * std::fabs(max_out))
    return ::testing::AssertionFailure() << "a chosen value " << min_in << " is below a rejected one " << max_out;
  return ::testing::AssertionSuccess();
}

inline std::vector<std::uint32_t> to_vec(const std::uint32_t* p, std::size_t n) {
  return p ? std::vector<std::uint32_t>(p, p + n) : std::vector<std::uint32_t>{};
}

// ---------------------------------------------------------------------------------------------
// Error messages

/// The what() of the sparq::error f throws, or a marker saying it threw something else / nothing.
template <class F>
std::string error_message(F&& f) {
  try {
    f();
  } catch (const sparq::error& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("<not a sparq::error: ") + e.what() + ">";
  }
  return "<no exception>";
}

inline bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

}  // namespace sparq_test

/// Expects `stmt` to throw sparq::error whose message contains `substr` (the argument's name).
#define EXPECT_SPARQ_ERROR(stmt, substr) \
  EXPECT_PRED2(::sparq_test::contains, ::sparq_test::error_message([&] { stmt; }), std::string(substr))
