// Regression tests on the real attention traces in tests/data/traces (3 of the 16 shared dev
// traces: t0_L2_S512, t0_L5_S512, t1_L3_S1024; 8 query heads, 2 KV heads, head_dim 64).
//
//  (a) Exactness: for f32, f16 and bf16 KV storage and several settings, the SparQ step's
//      output equals the float64 oracle sparq::ref::sparq run on the same stored values
//      (relative L2 < 1e-5 over all heads), alpha agrees, and the selections i1/i2 are
//      identical wherever the oracle's gap between the last chosen and the first rejected
//      candidate exceeds float32 rounding (inside that band only near-ties may swap).
//  (b) Accuracy floors at the paper's operating points, measured against the traces' exact
//      float64 dense output o.npy with the same code sparq-eval uses
//      (examples/sparq_eval/evaluate.hpp).
#include "../examples/sparq_eval/evaluate.hpp"

#include <gtest/gtest.h>
#include <sparq/io/trace.hpp>
#include <sparq/ref.hpp>
#include <sparq/sparq.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <set>
#include <string>
#include <vector>

namespace {

const std::string trace_dir = std::string(SPARQ_TEST_DATA_DIR) + "/traces";

const std::vector<sparq::io::trace>& traces() {
  static const std::vector<sparq::io::trace> all = [] {
    std::vector<sparq::io::trace> v;
    for (const auto& info : sparq::io::read_manifest(trace_dir))
      v.push_back(sparq::io::load_trace(trace_dir, info));
    return v;
  }();
  return all;
}

TEST(TraceAccuracy, TestTracesArePresent) {
  ASSERT_EQ(traces().size(), 3u);
  for (const auto& t : traces()) {
    EXPECT_EQ(t.info.head_dim, 64u);
    EXPECT_EQ(t.info.n_q_heads, 8u);
    EXPECT_EQ(t.info.n_kv_heads, 2u);
  }
}

// ---------------------------------------------------------------------------------------
// (a) SparQ == float64 oracle on the same stored values.

/// Checks that `got` (ascending) is the top-`want.size()` of `score` over `candidates` up to
/// near-ties: identical when the oracle's gap exceeds `band(boundary)`, otherwise every
/// position that differs scores within the band of the boundary. Returns the swap count.
template <class Band>
std::size_t expect_same_selection(const std::vector<std::uint32_t>& got,
                                  const std::vector<std::uint32_t>& want,
                                  const std::vector<double>& score, std::size_t candidates,
                                  Band band, const std::string& what) {
  const std::set<std::uint32_t> g(got.begin(), got.end()), w(want.begin(), want.end());
  EXPECT_EQ(g.size(), got.size()) << what << ": duplicate entries";
  EXPECT_EQ(got.size(), want.size()) << what;
  double boundary = INFINITY, best_rejected = -INFINITY;
  for (std::uint32_t s = 0; s < candidates; ++s) {
    if (w.count(s)) boundary = std::min(boundary, score[s]);
    else best_rejected = std::max(best_rejected, score[s]);
  }
  const double tol = band(boundary);
  std::size_t swaps = 0;
  for (std::uint32_t s : g)
    if (!w.count(s)) ++swaps;
  if (boundary - best_rejected > tol) {
    EXPECT_EQ(swaps, 0u) << what << ": oracle gap " << boundary - best_rejected
                         << " exceeds rounding (" << tol << ") but the selections differ";
  } else {
    for (std::uint32_t s = 0; s < candidates; ++s) {
      if (g.count(s) != w.count(s)) {
        EXPECT_LE(std::fabs(score[s] - boundary), tol)
            << what << ": position " << s << " differs from the oracle and is no near-tie";
      }
    }
  }
  return swaps;
}

struct exact_case {
  std::size_t rank, top_k, local;
  bool reallocate;
};

template <class T>
void check_against_oracle(const exact_case& c) {
  std::size_t swaps = 0;
  for (const auto& t : traces()) {
    sparq_eval::trace_evaluator ev(t);
    sparq_eval::setting st{c.rank, c.top_k, c.local, c.reallocate, sparq::dtype_of<T>::value};
    const sparq_eval::record rec = ev.run(st);
    const auto& kv = ev.kv<T>();
    sparq::config cfg;
    cfg.rank = c.rank, cfg.top_k = c.top_k, cfg.local = c.local, cfg.reallocate = c.reallocate;
    cfg.scale = t.info.softmax_scale;
    const std::size_t g = t.info.gqa_group, d = t.info.head_dim, S = t.info.S;
    const std::string what = t.info.id + " " + sparq::dtype_name(sparq::dtype_of<T>::value) +
                             " r=" + std::to_string(c.rank) + " k=" + std::to_string(c.top_k) +
                             " l=" + std::to_string(c.local) +
                             (c.reallocate ? " realloc" : " no-realloc");
    double num = 0, den = 0;
    for (std::size_t j = 0; j < t.info.n_kv_heads; ++j) {
      const auto want = sparq::ref::sparq<T>(t.q_head(j * g), g, kv.head(0, j), cfg);
      const std::string wj = what + " kv head " + std::to_string(j);
      // i2: the local window is forced, the rest is the top-(k-l) of the oracle's sel.
      if (c.top_k >= S) {
        EXPECT_EQ(rec.i2[j], want.positions) << wj;
        EXPECT_TRUE(rec.i1[j].empty()) << wj;
      } else {
        for (std::size_t s = S - c.local; s < S; ++s)
          EXPECT_TRUE(std::binary_search(rec.i2[j].begin(), rec.i2[j].end(),
                                         static_cast<std::uint32_t>(s)))
              << wj << ": local position " << s << " not chosen";
        std::vector<std::uint32_t> got_rest, want_rest;
        for (auto s : rec.i2[j]) if (s < S - c.local) got_rest.push_back(s);
        for (auto s : want.positions) if (s < S - c.local) want_rest.push_back(s);
        swaps += expect_same_selection(got_rest, want_rest, want.sel, S - c.local,
                                       [](double b) { return 1e-4 * b + 1e-9; }, wj + " i2");
        // i1: top-r of a = sum_h |q_h| (float64 here).
        std::vector<double> a(d, 0.0);
        for (std::size_t h = 0; h < g; ++h)
          for (std::size_t i = 0; i < d; ++i) a[i] += std::fabs(double(t.q_head(j * g + h)[i]));
        swaps += expect_same_selection(rec.i1[j], want.components, a, d,
                                       [](double b) { return 1e-5 * b; }, wj + " i1");
      }
      for (std::size_t h = 0; h < g; ++h) {
        EXPECT_NEAR(rec.alpha[j * g + h], want.alpha[h], 2e-6) << wj << " head " << h;
        EXPECT_GT(rec.alpha[j * g + h], 0.0);
        EXPECT_LE(rec.alpha[j * g + h], 1.0);
        for (std::size_t i = 0; i < d; ++i) {
          const double e = double(rec.y[(j * g + h) * d + i]) - want.out[h * d + i];
          num += e * e;
          den += want.out[h * d + i] * want.out[h * d + i];
        }
      }
    }
    // A near-tie swap changes which rows are attended; only then is a looser bound fair.
    EXPECT_LT(std::sqrt(num / den), swaps == 0 ? 1e-5 : 1e-3) << what;
  }
  ::testing::Test::RecordProperty("near_tie_swaps", static_cast<int>(swaps));
  if (swaps) std::printf("note: %zu near-tie swap(s) in the selections\n", swaps);
}

const exact_case exact_cases[] = {
    {16, 64, 16, true},   // a tight operating point
    {8, 128, 32, false},  // paper's r = d/8 without reallocation
    {32, 32, 8, true},    // few positions, many components
    {64, 48, 0, true},    // r = d (exact s_hat), no local window
    {16, 4096, 16, true}, // k >= S: the dense path, alpha = 1
};

TEST(TraceAccuracy, MatchesFloat64OracleF32) {
  for (const auto& c : exact_cases) check_against_oracle<float>(c);
}
TEST(TraceAccuracy, MatchesFloat64OracleF16) {
  for (const auto& c : exact_cases) check_against_oracle<sparq::f16>(c);
}
TEST(TraceAccuracy, MatchesFloat64OracleBF16) {
  for (const auto& c : exact_cases) check_against_oracle<sparq::bf16>(c);
}

// ---------------------------------------------------------------------------------------
// (b) Accuracy floors against the exact dense output o.npy.
//
// Measured with (on the commit that added this test; every KV dtype gives the same values
// to ~3 digits):
//   sparq-eval tests/data/traces --rank 16 --top-k 128 --local 32 --kv-dtype f32,f16
//   sparq-eval tests/data/traces --rank 8  --top-k 128 --local 32
//   sparq-eval tests/data/traces --rank 16 --top-k 64  --local 16
//   sparq-eval tests/data/traces --rank 16 --top-k 128 --local 32 --no-reallocate
// mean over the 3 traces:              rel_err     recall    (worst-trace recall)
//   r=16 k=128 l=32 realloc  f32      2.4435e-02  0.94792   0.93052
//   r=16 k=128 l=32 realloc  f16      2.4477e-02  0.94792   0.93052
//   r=8  k=128 l=32 realloc  f32      6.1906e-02  0.92395   0.87625
//   r=16 k=64  l=16 realloc  f32      4.3126e-02  0.90432   0.88715
//   r=16 k=128 l=32 no-real. f32      4.1259e-02  0.94792   0.93052
// Floors: mean rel_err <= measured * 1.1 + 0.002; mean recall >= measured - 0.01; every
// trace's recall >= its worst measured - 0.02. Compression (bytes read SparQ / dense) is
// exact arithmetic for these shapes and is checked against the spec's formula.

struct floor_case {
  exact_case cfg;
  sparq::dtype kv;
  double rel_err, recall, worst_recall;  // measured
};

const floor_case floors[] = {
    {{16, 128, 32, true}, sparq::dtype::f32, 2.4435e-02, 0.94792, 0.93052},
    {{16, 128, 32, true}, sparq::dtype::f16, 2.4477e-02, 0.94792, 0.93052},
    {{8, 128, 32, true}, sparq::dtype::f32, 6.1906e-02, 0.92395, 0.87625},
    {{16, 64, 16, true}, sparq::dtype::f32, 4.3126e-02, 0.90432, 0.88715},
    {{16, 128, 32, false}, sparq::dtype::f32, 4.1259e-02, 0.94792, 0.93052},
};

TEST(TraceAccuracy, FloorsAtPaperOperatingPoints) {
  for (const auto& f : floors) {
    double rel = 0, recall = 0;
    const std::string what = std::string("r=") + std::to_string(f.cfg.rank) +
                             " k=" + std::to_string(f.cfg.top_k) +
                             " l=" + std::to_string(f.cfg.local) +
                             (f.cfg.reallocate ? " realloc " : " no-realloc ") +
                             sparq::dtype_name(f.kv);
    for (const auto& t : traces()) {
      sparq_eval::trace_evaluator ev(t);
      const auto rec =
          ev.run({f.cfg.rank, f.cfg.top_k, f.cfg.local, f.cfg.reallocate, f.kv});
      rel += rec.rel_err / double(traces().size());
      recall += rec.recall / double(traces().size());
      EXPECT_GE(rec.recall, f.worst_recall - 0.02) << what << " " << t.info.id;
      EXPECT_GT(rec.cosine, 0.99) << what << " " << t.info.id;
      // Bytes read per KV head (spec): S*r of Kt + 2*k*d of K and V rows, in the storage
      // type, + d fp32 of v_mean when reallocating; dense: 2*S*d.
      const std::size_t es = sparq::dtype_size(f.kv), S = t.info.S, d = t.info.head_dim,
                        nkv = t.info.n_kv_heads;
      const std::size_t k = std::min(f.cfg.top_k, S);
      EXPECT_EQ(rec.sparq_bytes, nkv * ((S * f.cfg.rank + 2 * k * d) * es +
                                        (f.cfg.reallocate ? d * sizeof(float) : 0)))
          << what << " " << t.info.id;
      EXPECT_EQ(rec.dense_bytes, nkv * 2 * S * d * es) << what << " " << t.info.id;
    }
    EXPECT_LE(rel, f.rel_err * 1.1 + 0.002) << what << " (measured " << f.rel_err << ")";
    EXPECT_GE(recall, f.recall - 0.01) << what << " (measured " << f.recall << ")";
  }
}

// Sanity: the library's dense step reproduces o.npy (computed in float64 from the same
// float32 inputs) to float32 accuracy; with 16-bit storage the rounding of K/V dominates.
TEST(TraceAccuracy, DenseStepMatchesTraceOutput) {
  for (const auto& t : traces()) {
    sparq_eval::trace_evaluator ev(t);
    EXPECT_LT(ev.dense(sparq::dtype::f32).max_head_err, 2e-6) << t.info.id;
    EXPECT_LT(ev.dense(sparq::dtype::bf16).rel_err, 2e-2) << t.info.id;
    EXPECT_LT(ev.dense(sparq::dtype::f16).rel_err, 2e-3) << t.info.id;
  }
}

}  // namespace
