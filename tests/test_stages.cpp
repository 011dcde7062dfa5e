// Tests for the three SparQ stages one by one (stage1_scores.hpp, stage2_attend.hpp,
// stage3_reallocate.hpp) against float64 code written from docs/sparq-semantics.md, for every
// storage type (typed tests), head dims around and away from the SIMD widths, lengths around
// the vector widths (1, 7, 15, 16, 17, 63, 64, 65, 4*16+3, ~1000, ~4000), partial position
// ranges, padded strides and misaligned base pointers (padding poisoned with NaN).
//
// Tolerances: the stages accumulate in fp32 over values that are exactly representable (the
// oracle reads the same rounded storage), so errors are a few fp32 ulps times the length of
// the sums involved; each bound below is stated where it is used.

#include "test_util.hpp"

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace {

using namespace sparq_test;
constexpr double eps32 = std::numeric_limits<float>::epsilon() / 2;  // unit roundoff of fp32

const std::size_t head_dims[] = {1, 7, 15, 16, 17, 64, 72, 80, 96, 128, 256};
const std::size_t lengths[] = {1, 7, 15, 16, 17, 31, 32, 33, 63, 64, 65, 67, 1000, 4003};

template <class T>
class stages : public ::testing::Test {};
TYPED_TEST_SUITE(stages, storage_types, dtype_names);

// ---------------------------------------------------------------------------------------------
// Stage 1: components

TEST(stage1, choose_components_matches_top_r_of_the_summed_magnitudes) {
  rng r(10);
  int exact = 0, total = 0;
  for (std::size_t d : head_dims)
    for (std::size_t g : {1, 4, 8}) {
      const auto q = random_queries(r, g, d, 1.0f);
      std::vector<double> a(d, 0.0);
      for (std::size_t h = 0; h < g; ++h)
        for (std::size_t i = 0; i < d; ++i) a[i] += std::fabs(double(q[h * d + i]));
      for (std::size_t rank : {std::size_t{1}, (d + 1) / 2, d}) {
        std::vector<float> as(d), buf_a(d);
        std::vector<std::uint32_t> order(d), i1(rank, 0xffffffffu);
        std::vector<unsigned char> tk(sparq::top_k_scratch_bytes(d) + 1);
        sparq::choose_components(q.data(), g, d, rank, buf_a.data(), order.data(), tk.data() + 1, i1.data());
        // fp32 sums of g magnitudes are within g ulps of the float64 ones: compare the set
        // exactly unless the r-th and (r+1)-th sums are that close.
        EXPECT_TRUE(valid_top_k(a, i1, rank, 1e-5)) << "d=" << d << " g=" << g << " r=" << rank;
        ++total;
        if (clear_gap(a, rank, 1e-5)) {
          ++exact;
          EXPECT_EQ(i1, sparq::ref::top_k(a, rank)) << "d=" << d << " g=" << g << " r=" << rank;
        }
      }
    }
  EXPECT_GT(exact, total * 3 / 4) << "too few cases compared exactly; the test lost its teeth";
}

TEST(stage1, choose_components_breaks_ties_by_lower_index) {
  const std::size_t d = 37, g = 3;
  // Every component has the same total magnitude (signs differ): the first r indices win.
  std::vector<float> q(g * d);
  for (std::size_t h = 0; h < g; ++h)
    for (std::size_t i = 0; i < d; ++i) q[h * d + i] = ((i + h) % 2 ? -0.5f : 0.5f) * float(h + 1);
  for (std::size_t rank : {1, 5, 16, 36, 37}) {
    std::vector<float> a(d);
    std::vector<std::uint32_t> order(d), i1(rank);
    std::vector<unsigned char> tk(sparq::top_k_scratch_bytes(d));
    sparq::choose_components(q.data(), g, d, rank, a.data(), order.data(), tk.data(), i1.data());
    for (std::size_t j = 0; j < rank; ++j) EXPECT_EQ(i1[j], j) << "rank=" << rank;
  }
  // Two heavy components of equal magnitude compete for one slot: the lower index (5) wins.
  std::vector<float> q2(d, 0.1f);
  q2[5] = -3.0f;
  q2[20] = 3.0f;
  std::vector<float> a(d);
  std::vector<std::uint32_t> order(d), i1(1);
  std::vector<unsigned char> tk(sparq::top_k_scratch_bytes(d));
  sparq::choose_components(q2.data(), 1, d, 1, a.data(), order.data(), tk.data(), i1.data());
  EXPECT_EQ(i1[0], 5u);
}

TEST(stage1, scaled_query_components_apply_the_coverage_temperature) {
  rng r(11);
  for (std::size_t d : head_dims)
    for (std::size_t g : {1, 4, 8}) {
      auto q = random_queries(r, g, d, 2.0f);
      if (g > 1 && d > 1) {
        for (std::size_t i = 0; i < d; ++i) q[1 * d + i] = 0.0f;  // an all-zero head
      }
      const std::size_t rank = (d + 2) / 3;
      std::vector<std::uint32_t> i1(rank);
      for (std::size_t j = 0; j < rank; ++j) i1[j] = static_cast<std::uint32_t>((j * 3) % d);
      std::sort(i1.begin(), i1.end());
      i1.erase(std::unique(i1.begin(), i1.end()), i1.end());
      const float scale = 0.37f;
      std::vector<float> qs(g * i1.size());
      sparq::scaled_query_components(q.data(), g, d, i1.data(), i1.size(), scale, qs.data());
      for (std::size_t h = 0; h < g; ++h) {
        const double mult = sparq::ref::temperature_multiplier(q.data() + h * d, d, i1, scale);
        for (std::size_t j = 0; j < i1.size(); ++j) {
          const double want = q[h * d + i1[j]] * mult;
          // coverage is a ratio of fp32 sums of d positive terms: relative error <= ~d ulps.
          EXPECT_NEAR(qs[h * i1.size() + j], want, (d + 4) * eps32 * std::fabs(want) + 1e-30)
              << "d=" << d << " h=" << h << " j=" << j;
        }
      }
    }
}

TEST(stage1, zero_coverage_head_uses_temperature_one) {
  // q is zero on the chosen components but not elsewhere: coverage 0, multiplier = scale,
  // every qs entry 0 (no 0/0).
  const std::size_t d = 8;
  std::vector<float> q = {0, 0, 1, 1, 1, 1, 1, 1};
  const std::uint32_t i1[2] = {0, 1};
  float qs[2] = {-1, -1};
  sparq::scaled_query_components(q.data(), 1, d, i1, 2, 0.5f, qs);
  EXPECT_EQ(qs[0], 0.0f);
  EXPECT_EQ(qs[1], 0.0f);
}

// ---------------------------------------------------------------------------------------------
// Stage 1: approximate logits

TYPED_TEST(stages, approximate_logits_match_float64_over_full_and_partial_ranges) {
  using T = TypeParam;
  rng r(12);
  std::size_t case_no = 0;
  for (std::size_t d : {1, 7, 16, 17, 64, 80, 128}) {
    for (std::size_t S : lengths) {
      if (S > 1000 && d != 64 && d != 128) continue;  // long lengths at the two common dims
      const layout lay = test_layouts()[case_no % 3];
      const std::size_t g = std::size_t{1} + (case_no % 8);  // 1..8 heads: every head-block remainder
      ++case_no;
      const auto head = random_head<T>(r, S, d, lay);
      const std::size_t rank = std::max<std::size_t>(1, d / 4 + case_no % 3);
      // A random sorted set of min(rank, d) distinct components.
      std::vector<std::uint32_t> i1(d);
      for (std::size_t i = 0; i < d; ++i) i1[i] = static_cast<std::uint32_t>(i);
      std::shuffle(i1.begin(), i1.end(), r.gen);
      i1.resize(std::min(rank, d));
      std::sort(i1.begin(), i1.end());
      const std::size_t rr = i1.size();
      std::vector<float> qs(g * rr);
      for (float& x : qs) x = r.normal(0.3f);

      // Full range, then a range starting and ending off any vector boundary.
      for (auto [s0, s1] : {std::pair<std::size_t, std::size_t>{0, S}, {S / 3, S - S / 5}}) {
        if (s1 <= s0) continue;
        const std::size_t ld = S + 16 + case_no % 5;
        const float sentinel = -12345.0f;
        std::vector<float> e(g * ld, sentinel), mx(g, -std::numeric_limits<float>::infinity());
        sparq::no_traffic nt;
        sparq::approximate_logits(qs.data(), g, rr, head.kt(), i1.data(), s0, s1, e.data(), ld, mx.data(), nt);
        for (std::size_t h = 0; h < g; ++h) {
          float m = -std::numeric_limits<float>::infinity();
          for (std::size_t s = 0; s < ld; ++s) {
            const float got = e[h * ld + s];
            if (s < s0 || s >= s1) {
              ASSERT_EQ(got, sentinel) << "wrote outside [s0, s1) at s=" << s;
              continue;
            }
            double want = 0, mag = 0;
            for (std::size_t j = 0; j < rr; ++j) {
              const double t = double(qs[h * rr + j]) * head.key(s, i1[j]);
              want += t;
              mag += std::fabs(t);
            }
            // A dot product of rr terms in fp32 (with or without FMA) is within
            // (rr+1)*u*sum|terms| of the exact value (Higham's gamma_n bound).
            ASSERT_NEAR(got, want, (rr + 1) * eps32 * mag + 1e-30)
                << type_name<T>() << " d=" << d << " S=" << S << " g=" << g << " h=" << h << " s=" << s;
            m = std::max(m, got);
          }
          EXPECT_EQ(mx[h], m) << "running max must be the max of the written logits";
        }
      }
    }
  }
}

TYPED_TEST(stages, approximate_logits_keep_a_larger_running_max) {
  using T = TypeParam;
  rng r(13);
  // S drawn at run time: with S and g both compile-time constants GCC 12 at -march=x86-64-v3
  // raises a false -Waggressive-loop-optimizations inside the inlined kernel's tail loop.
  const std::size_t S = 35 + r.index(10), d = 16, g = 2, ld = 48;
  const auto head = random_head<T>(r, S, d);
  const std::vector<std::uint32_t> i1 = {1, 4, 9};
  std::vector<float> qs(g * i1.size(), 0.01f), e(g * ld), mx = {1e6f, -1e6f};
  sparq::no_traffic nt;
  sparq::approximate_logits(qs.data(), g, i1.size(), head.kt(), i1.data(), 0, S, e.data(), ld, mx.data(), nt);
  EXPECT_EQ(mx[0], 1e6f);
  EXPECT_EQ(mx[1], *std::max_element(e.begin() + ld, e.begin() + ld + S));
}

TYPED_TEST(stages, equal_keys_get_equal_logits_wherever_they_sit) {
  // Positions in the SIMD body and in the scalar tail must score an identical key identically:
  // otherwise exact ties would be broken by position within the vector, not by index.
  using T = TypeParam;
  rng r(14);
  for (std::size_t S : {7, 17, 67, 131}) {
    const std::size_t d = 24;
    std::vector<float> K(S * d), V(S * d, 0.0f);
    const auto base = random_rows(r, 1, d);
    for (std::size_t s = 0; s < S; ++s)
      for (std::size_t i = 0; i < d; ++i) K[s * d + i] = base[i];
    const head_data<T> head(K, V, S, d, layout{1, 3, 1});
    std::vector<std::uint32_t> i1 = {0, 3, 5, 8, 13, 21, 23};
    for (std::size_t g : {1, 3, 4, 5}) {
      std::vector<float> qs(g * i1.size());
      for (float& x : qs) x = r.normal();
      std::vector<float> e(g * S), mx(g, -std::numeric_limits<float>::infinity());
      sparq::no_traffic nt;
      sparq::approximate_logits(qs.data(), g, i1.size(), head.kt(), i1.data(), 0, S, e.data(), S, mx.data(), nt);
      for (std::size_t h = 0; h < g; ++h)
        for (std::size_t s = 1; s < S; ++s)
          ASSERT_EQ(e[h * S + s], e[h * S]) << type_name<T>() << " S=" << S << " g=" << g << " s=" << s;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Stage 1: softmax and the group sum

TEST(stage1, softmax_group_matches_float64) {
  rng r(15);
  for (std::size_t S : lengths)
    for (std::size_t g : {1, 4, 8}) {
      const std::size_t ld = S + (S % 3) * 5;
      std::vector<float> e(g * ld), mx(g, -std::numeric_limits<float>::infinity());
      std::vector<std::vector<double>> p(g);
      for (std::size_t h = 0; h < g; ++h) {
        std::vector<double> logit(S);
        for (std::size_t s = 0; s < S; ++s) {
          e[h * ld + s] = r.normal(3.0f);
          logit[s] = e[h * ld + s];
          mx[h] = std::max(mx[h], e[h * ld + s]);
        }
        p[h] = softmax64(logit);
      }
      const std::vector<float> logits = e;
      std::vector<float> z(g), sel(S);
      sparq::softmax_group(e.data(), g, S, ld, mx.data(), z.data(), sel.data());
      std::vector<double> want_sel(S, 0.0);
      for (std::size_t h = 0; h < g; ++h) {
        double zz = 0;
        for (std::size_t s = 0; s < S; ++s) {
          const double w = std::exp(double(logits[h * ld + s]) - mx[h]);
          zz += w;
          // fp32 rounding of the argument (logit - mx) moves exp by |logit - mx| ulps; the
          // exp itself (SIMD polynomial or libm) adds a few more.
          const double arg = std::fabs(double(logits[h * ld + s]) - mx[h]);
          ASSERT_NEAR(e[h * ld + s], w, (8 + arg) * eps32 * w) << "S=" << S << " h=" << h << " s=" << s;
          want_sel[s] += p[h][s];
        }
        EXPECT_NEAR(z[h], zz, (S + 8) * eps32 * zz);
      }
      // sel: g normalised weights summed; per term the exp error above plus z's rounding.
      for (std::size_t s = 0; s < S; ++s) {
        double bound = 0;
        for (std::size_t h = 0; h < g; ++h)
          bound += (S + 24 + std::fabs(double(logits[h * ld + s]) - mx[h])) * eps32 * p[h][s];
        ASSERT_NEAR(sel[s], want_sel[s], bound + 1e-37) << "S=" << S << " s=" << s;
      }
    }
}

TEST(stage1, softmax_group_gives_equal_logits_equal_weights_wherever_they_sit) {
  // Exact ties in sel must survive the softmax: identical logits in the SIMD body and in the
  // scalar tail must produce bit-identical weights and sums.
  rng r(16);
  for (std::size_t S : {5, 17, 33, 67, 131}) {
    for (std::size_t g : {1, 4}) {
      std::vector<float> e(g * S), mx(g);
      for (std::size_t h = 0; h < g; ++h) {
        const float v = r.normal(2.0f);
        for (std::size_t s = 0; s < S; ++s) e[h * S + s] = (s % 2) ? v : v - 1.5f;
        mx[h] = v + 0.731f;  // not the max, so exp(v - mx) is a generic argument
      }
      std::vector<float> z(g), sel(S);
      sparq::softmax_group(e.data(), g, S, S, mx.data(), z.data(), sel.data());
      for (std::size_t s = 2; s < S; ++s) {
        ASSERT_EQ(sel[s], sel[s % 2]) << "S=" << S << " g=" << g << " s=" << s;
        for (std::size_t h = 0; h < g; ++h) ASSERT_EQ(e[h * S + s], e[h * S + s % 2]) << "S=" << S << " s=" << s;
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Stage 2: positions

std::vector<std::uint32_t> expected_positions(const std::vector<float>& sel, std::size_t k, std::size_t local) {
  const std::size_t S = sel.size();
  if (k >= S) {
    std::vector<std::uint32_t> all(S);
    for (std::size_t s = 0; s < S; ++s) all[s] = static_cast<std::uint32_t>(s);
    return all;
  }
  auto pos = sparq::ref::top_k(std::vector<double>(sel.begin(), sel.begin() + (S - local)), k - local);
  for (std::size_t s = S - local; s < S; ++s) pos.push_back(static_cast<std::uint32_t>(s));
  return pos;
}

TEST(stage2, choose_positions_is_the_window_plus_the_top_of_the_rest) {
  rng r(17);
  for (std::size_t S : lengths)
    for (int ties = 0; ties < 2; ++ties) {
      std::vector<float> sel(S);
      for (float& x : sel) x = ties ? 0.125f * static_cast<float>(r.index(3)) : r.uniform(0.0f, 1.0f);
      for (std::size_t k : {std::size_t{1}, std::size_t{2}, std::size_t{16}, S / 2 + 1, S - 1, S, S + 3}) {
        if (k == 0) continue;
        for (std::size_t local : {std::size_t{0}, std::size_t{1}, k / 4, k}) {
          if (local > k) continue;
          std::vector<std::uint32_t> pos(S + 1, 0xdeadbeefu);
          std::vector<unsigned char> tk(sparq::top_k_scratch_bytes(S) + 5);
          const std::size_t n = sparq::choose_positions(sel.data(), S, k, local, pos.data(), tk.data() + 5);
          ASSERT_EQ(n, std::min(k, S));
          pos.resize(n);
          EXPECT_EQ(pos, expected_positions(sel, k, local)) << "S=" << S << " k=" << k << " l=" << local << " ties=" << ties;
        }
      }
    }
}

TEST(stage2, local_window_is_chosen_even_with_the_lowest_scores) {
  const std::size_t S = 100, k = 10, local = 4;
  std::vector<float> sel(S, 1.0f);
  for (std::size_t s = S - local; s < S; ++s) sel[s] = 0.0f;
  std::vector<std::uint32_t> pos(S);
  std::vector<unsigned char> tk(sparq::top_k_scratch_bytes(S));
  const std::size_t n = sparq::choose_positions(sel.data(), S, k, local, pos.data(), tk.data());
  ASSERT_EQ(n, k);
  // All of the rest tie at 1.0: the lowest six indices, then the window.
  EXPECT_EQ(std::vector<std::uint32_t>(pos.begin(), pos.begin() + n),
            (std::vector<std::uint32_t>{0, 1, 2, 3, 4, 5, 96, 97, 98, 99}));
}

// ---------------------------------------------------------------------------------------------
// Stage 2: exact attention over gathered rows

TYPED_TEST(stages, attend_positions_matches_float64_attention) {
  using T = TypeParam;
  rng r(18);
  std::size_t case_no = 0;
  for (std::size_t d : head_dims) {
    for (std::size_t S : {1, 7, 17, 65, 67, 300, 1000}) {
      if (S >= 1000 && d > 128) continue;
      const layout lay = test_layouts()[case_no % 3];
      const std::size_t g = std::size_t{1} << (case_no % 4);  // 1, 2, 4, 8
      ++case_no;
      const auto head = random_head<T>(r, S, d, lay);
      const auto q = random_queries(r, g, d, 1.5f);
      // A sorted random subset (about half), never empty; and every position.
      std::vector<std::uint32_t> subset, all;
      for (std::size_t s = 0; s < S; ++s) {
        all.push_back(static_cast<std::uint32_t>(s));
        if (r.index(2) == 0) subset.push_back(static_cast<std::uint32_t>(s));
      }
      if (subset.empty()) subset.push_back(static_cast<std::uint32_t>(S - 1));
      for (const auto* pos : {&subset, &all}) {
        const float scale = 1.0f / std::sqrt(float(d));
        std::vector<float> scratch(sparq::attend_scratch_floats(g, d) + 1), out(g * d), lse(g);
        sparq::attend_positions<T>(q.data(), g, head.k(), head.v(), pos->data(), pos->size(), scale,
                                   scratch.data() + 1, out.data(), lse.data());
        std::vector<double> want, want_lse;
        attend64(q.data(), g, head.k(), head.v(), *pos, scale, want, want_lse);
        // fp32 accumulation over the same stored values: ~1e-6 relative; 2e-5 leaves room for
        // logit rounding amplified by the peaked softmax (|logit| up to ~20).
        EXPECT_LT(rel_l2(out.data(), want), 2e-5) << type_name<T>() << " d=" << d << " S=" << S << " g=" << g;
        for (std::size_t h = 0; h < g; ++h)
          EXPECT_NEAR(lse[h], want_lse[h], 1e-5 * std::max(1.0, std::fabs(want_lse[h])));
        // The no-lse overload computes the same output.
        std::vector<float> out2(g * d);
        sparq::attend_positions<T>(q.data(), g, head.k(), head.v(), pos->data(), pos->size(), scale,
                                   scratch.data() + 1, out2.data());
        EXPECT_EQ(out, out2);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Stage 3

TEST(stage3, fetched_mass_is_the_chosen_share_of_the_weights) {
  rng r(19);
  for (std::size_t S : lengths)
    for (std::size_t g : {1, 4, 8}) {
      const std::size_t ld = S + 3;
      std::vector<float> e(g * ld, std::numeric_limits<float>::quiet_NaN()), z(g);
      for (std::size_t h = 0; h < g; ++h) {
        double zz = 0;
        for (std::size_t s = 0; s < S; ++s) zz += e[h * ld + s] = std::exp(r.normal(2.0f));
        z[h] = static_cast<float>(zz);
      }
      std::vector<std::uint32_t> pos;
      for (std::size_t s = 0; s < S; s += 1 + r.index(4)) pos.push_back(static_cast<std::uint32_t>(s));
      std::vector<float> alpha(g);
      sparq::fetched_mass(e.data(), g, ld, z.data(), pos.data(), pos.size(), alpha.data());
      for (std::size_t h = 0; h < g; ++h) {
        double m = 0;
        for (auto s : pos) m += e[h * ld + s];
        const double want = std::min(1.0, m / double(z[h]));
        EXPECT_NEAR(alpha[h], want, (pos.size() + 4) * eps32 * want) << "S=" << S << " h=" << h;
        EXPECT_GT(alpha[h], 0.0f);
        EXPECT_LE(alpha[h], 1.0f);
      }
      // Every position: exactly the whole mass, capped at 1 whatever the rounding.
      std::vector<std::uint32_t> all(S);
      for (std::size_t s = 0; s < S; ++s) all[s] = static_cast<std::uint32_t>(s);
      sparq::fetched_mass(e.data(), g, ld, z.data(), all.data(), S, alpha.data());
      for (std::size_t h = 0; h < g; ++h) {
        EXPECT_LE(alpha[h], 1.0f);
        EXPECT_NEAR(alpha[h], 1.0, (S + 4) * eps32);
      }
    }
}

TEST(stage3, reallocate_blends_with_the_mean_by_alpha) {
  rng r(20);
  for (std::size_t d : head_dims)
    for (std::size_t g : {1, 4, 8}) {
      std::vector<float> y = random_rows(r, g, d), mean = random_rows(r, 1, d), alpha(g);
      for (std::size_t h = 0; h < g; ++h) alpha[h] = h == 0 ? 1.0f : r.uniform(0.0f, 1.0f);
      const std::vector<float> y0 = y;
      sparq::reallocate(y.data(), g, d, alpha.data(), mean.data());
      for (std::size_t h = 0; h < g; ++h)
        for (std::size_t i = 0; i < d; ++i) {
          const double want = double(alpha[h]) * y0[h * d + i] + (1 - double(alpha[h])) * mean[i];
          const double mag = std::fabs(alpha[h] * y0[h * d + i]) + std::fabs((1 - alpha[h]) * mean[i]);
          ASSERT_NEAR(y[h * d + i], want, 4 * eps32 * mag + 1e-30);
        }
      // alpha = 1 leaves y' unchanged exactly.
      for (std::size_t i = 0; i < d; ++i) EXPECT_EQ(y[i], y0[i]);
    }
}

}  // namespace
