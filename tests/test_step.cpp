// Tests for the composed SparQ step (step.hpp) against the float64 oracle sparq::ref::sparq,
// for every storage type (typed tests), head dims 1..256, lengths around the SIMD widths up to
// ~4000, GQA groups of 1/4/8 query heads, padded strides and misaligned bases; and the spec's
// invariants (docs/sparq-semantics.md): k >= S is dense whatever r, r = d gives the exact
// attention distribution, 0 < alpha <= 1, the local window is always gathered, one selection
// per group, lower index wins exact ties, repeated calls are bit-identical.
//
// How selections are compared. The step computes the approximate scores in fp32 with SIMD
// summation orders; the oracle in float64. Two positions whose oracle scores differ by less
// than that rounding may legitimately swap (spec, "Decisions"). So every selection is checked
// to be a valid top-k up to a relative tolerance, and compared exactly with the oracle's when
// the gap between the k-th and (k+1)-th oracle score is larger than that tolerance (most
// cases; the tests assert that most cases were compared exactly). Outputs are always compared
// tightly: against ref::sparq when the selections agree, and otherwise against the float64
// oracle evaluated on the step's own selections (sparq_test::sparq_given).

#include "test_util.hpp"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <vector>

namespace {

using namespace sparq_test;

// Relative tolerance on scores (a = sum |q|, and sel) below which a near-tie may flip. The
// scores come from fp32 dot products of up to 256 terms with |logit| up to ~30 here, so their
// relative rounding is ~1e-6..1e-5; 1e-4 keeps every flip that rounding can cause out of the
// exact comparisons.
constexpr double select_tol = 1e-4;
// Outputs: fp32 accumulation over the same stored values the oracle reads gives ~1e-6 relative
// L2 error for every dtype (storage rounding is not an error here); 2e-5 allows for logit
// rounding amplified by peaked softmaxes.
constexpr double out_tol = 2e-5;

struct tallies {
  int cases = 0, sparse = 0, exact_i1 = 0, exact_i2 = 0;
  double max_out_err = 0, max_alpha_err = 0;
};

template <class T>
void check_step(const head_data<T>& head, const std::vector<float>& q, std::size_t g,
                const sparq::config& cfg, tallies& t, const std::string& label) {
  SCOPED_TRACE(label);
  const std::size_t S = head.S, d = head.d;
  const auto kv = head.view();
  scratch_buffer buf(sparq::step_workspace_bytes(g, S, d, cfg), 1 + t.cases % 13);
  std::vector<float> out(g * d, std::numeric_limits<float>::quiet_NaN());
  const sparq::step_result res = sparq::step<T>(q.data(), g, kv, cfg, buf.ws(), out.data());
  const auto ref = sparq::ref::sparq<T>(q.data(), g, kv, cfg);
  const auto i1 = to_vec(res.components, res.n_components);
  const auto i2 = to_vec(res.positions, res.n_positions);
  ++t.cases;

  ASSERT_EQ(res.n_positions, std::min(cfg.top_k, S));
  // 0 < alpha <= 1. Where the exact alpha is below fp32's range (a head whose mass lies far
  // from every gathered position: its weights there are exp(-100) and less) fp32 legitimately
  // flushes it to 0; from 1e-30 up (every fetched weight then >= 1e-30, a normal fp32 number)
  // it must stay positive.
  for (std::size_t h = 0; h < g; ++h) {
    EXPECT_LE(res.alpha[h], 1.0f) << "h=" << h;
    if (ref.alpha[h] > 1e-30) {
      EXPECT_GT(res.alpha[h], 0.0f) << "h=" << h << " exact alpha " << ref.alpha[h];
    }
    EXPECT_GE(res.alpha[h], 0.0f) << "h=" << h;
  }
  if (cfg.top_k >= S) {
    // Every position: dense attention, alpha exactly 1, no components.
    EXPECT_EQ(res.components, nullptr);
    EXPECT_EQ(res.n_components, 0u);
    EXPECT_EQ(i2, ref.positions);
    for (std::size_t h = 0; h < g; ++h) EXPECT_EQ(res.alpha[h], 1.0f);
    EXPECT_LT(rel_l2(out.data(), ref.out), out_tol);
    return;
  }
  ++t.sparse;

  // Stage 1: i1 is a top-r of a = sum_h |q_h| (exactly the oracle's unless a near-tie).
  std::vector<double> a(d, 0.0);
  for (std::size_t h = 0; h < g; ++h)
    for (std::size_t i = 0; i < d; ++i) a[i] += std::fabs(double(q[h * d + i]));
  ASSERT_EQ(res.n_components, cfg.rank);
  EXPECT_TRUE(valid_top_k(a, i1, cfg.rank, select_tol));
  if (clear_gap(a, cfg.rank, select_tol)) {
    ++t.exact_i1;
    EXPECT_EQ(i1, ref.components);
  }

  // Stage 2: the window, then a top-(k-l) of the oracle's sel for the step's own i1.
  const auto given = sparq_given<T>(q.data(), g, kv, cfg, i1, i2);
  const std::size_t rest = S - cfg.local;
  for (std::size_t j = 0; j < cfg.local; ++j)
    EXPECT_EQ(i2[cfg.top_k - cfg.local + j], rest + j) << "local window position missing";
  const std::vector<std::uint32_t> chosen_rest(i2.begin(), i2.begin() + (cfg.top_k - cfg.local));
  const std::vector<double> sel_rest(given.sel.begin(), given.sel.begin() + rest);
  EXPECT_TRUE(valid_top_k(sel_rest, chosen_rest, cfg.top_k - cfg.local, select_tol));
  const bool same_i1 = i1 == ref.components;
  if (same_i1 && clear_gap(sel_rest, cfg.top_k - cfg.local, select_tol)) {
    ++t.exact_i2;
    EXPECT_EQ(i2, ref.positions);
  }

  // Outputs, alpha and lse, against the oracle on the step's own selections (identical to
  // ref::sparq when the selections agree, which is also checked).
  EXPECT_LT(rel_l2(out.data(), given.out), out_tol);
  t.max_out_err = std::max(t.max_out_err, rel_l2(out.data(), given.out));
  if (same_i1 && i2 == ref.positions) {
    EXPECT_LT(rel_l2(out.data(), ref.out), out_tol);
  }
  for (std::size_t h = 0; h < g; ++h) {
    // alpha inherits the stage-1 logit rounding: relative 5e-5 (see select_tol).
    EXPECT_NEAR(res.alpha[h], given.alpha[h], 5e-5 * given.alpha[h] + 1e-7) << "h=" << h;
    if (given.alpha[h] > 1e-3)
      t.max_alpha_err = std::max(t.max_alpha_err, std::fabs(res.alpha[h] - given.alpha[h]) / given.alpha[h]);
    EXPECT_NEAR(res.lse[h], given.lse[h], 1e-5 * std::max(1.0, std::fabs(given.lse[h]))) << "h=" << h;
  }
}

sparq::config make_config(std::size_t d, std::size_t S, std::size_t variant) {
  sparq::config cfg;
  const std::size_t ranks[] = {1, std::max<std::size_t>(1, d / 8), std::max<std::size_t>(1, d / 2), d};
  cfg.rank = ranks[variant % 4];
  const std::size_t ks[] = {1, 4, 32, S / 3 + 1, S / 2 + 2, S + 5};
  cfg.top_k = std::max<std::size_t>(1, ks[variant % 6]);
  const std::size_t locals[] = {0, cfg.top_k / 4, cfg.top_k, 1};
  cfg.local = std::min(cfg.top_k, locals[(variant / 2) % 4]);
  cfg.reallocate = variant % 3 != 2;
  cfg.scale = variant % 5 == 4 ? 0.05f : 0.0f;
  return cfg;
}

template <class T>
class step_typed : public ::testing::Test {};
TYPED_TEST_SUITE(step_typed, storage_types, dtype_names);

TYPED_TEST(step_typed, matches_the_oracle_across_dims_lengths_groups_and_layouts) {
  using T = TypeParam;
  rng r(100);
  tallies t;
  std::size_t case_no = 0;
  const std::size_t dims[] = {1, 7, 15, 16, 17, 64, 72, 80, 96, 128, 256};
  const std::size_t lengths[] = {1, 7, 15, 16, 17, 63, 64, 65, 67, 1000, 4003};
  const std::size_t groups[] = {1, 4, 8};
  for (std::size_t d : dims)
    for (std::size_t S : lengths) {
      if (S > 1000 && d != 64 && d != 128) continue;  // the longest length at the common dims
      for (std::size_t v = 0; v < 2; ++v, ++case_no) {
        const std::size_t g = groups[case_no % 3];
        const layout lay = test_layouts()[case_no % 3];
        const auto head = random_head<T>(r, S, d, lay);
        const auto q = random_queries(r, g, d, 0.3f + 0.2f * float(case_no % 5));
        const sparq::config cfg = make_config(d, S, case_no * 7 + v);
        check_step(head, q, g, cfg, t,
                   std::string(type_name<T>()) + " d=" + std::to_string(d) + " S=" + std::to_string(S) +
                       " g=" + std::to_string(g) + " r=" + std::to_string(cfg.rank) + " k=" +
                       std::to_string(cfg.top_k) + " l=" + std::to_string(cfg.local) +
                       " realloc=" + std::to_string(cfg.reallocate) + " pad=" + std::to_string(lay.row_pad));
      }
    }
  std::printf("%s: %d cases, %d sparse, i1 compared exactly in %d, i2 in %d; max rel L2 error %.2e, "
              "max alpha rel error %.2e\n",
              type_name<T>(), t.cases, t.sparse, t.exact_i1, t.exact_i2, t.max_out_err, t.max_alpha_err);
  // The comparisons above must have been exact in most sparse cases, or they prove little.
  EXPECT_GT(t.sparse, 40);
  EXPECT_GE(t.exact_i1 * 10, t.sparse * 8) << t.exact_i1 << " of " << t.sparse;
  EXPECT_GE(t.exact_i2 * 10, t.sparse * 7) << t.exact_i2 << " of " << t.sparse;
}

TYPED_TEST(step_typed, top_k_at_least_length_is_dense_attention_whatever_the_rank) {
  using T = TypeParam;
  rng r(101);
  for (std::size_t d : {16, 64, 80, 128})
    for (std::size_t S : {1, 17, 64, 300}) {
      const auto head = random_head<T>(r, S, d, layout{2, 0, 1});
      for (std::size_t g : {1, 4, 8}) {
        const auto q = random_queries(r, g, d, 1.0f);
        const auto dense = sparq::ref::dense<T>(q.data(), g, head.k(), head.v(), 1.0 / std::sqrt(double(float(d))));
        std::vector<float> dense_out(g * d);
        scratch_buffer dbuf(sparq::dense_workspace_bytes(g, d));
        sparq::dense_step<T>(q.data(), g, head.k(), head.v(), 0.0f, dbuf.ws(), dense_out.data());
        for (std::size_t rank : {std::size_t{1}, d / 2, d}) {
          for (std::size_t k : {S, S + 1, 10 * S}) {
            sparq::config cfg;
            cfg.rank = rank;
            cfg.top_k = k;
            cfg.local = std::min<std::size_t>(k, 3);
            scratch_buffer buf(sparq::step_workspace_bytes(g, S, d, cfg));
            std::vector<float> out(g * d);
            const auto res = sparq::step<T>(q.data(), g, head.view(), cfg, buf.ws(), out.data());
            EXPECT_LT(rel_l2(out.data(), dense), out_tol) << "d=" << d << " S=" << S << " r=" << rank;
            EXPECT_LT(max_abs_diff(out.data(), std::vector<double>(dense_out.begin(), dense_out.end())),
                      1e-5 * (1 + *std::max_element(dense.begin(), dense.end())));
            for (std::size_t h = 0; h < g; ++h) EXPECT_EQ(res.alpha[h], 1.0f);
            ASSERT_EQ(res.n_positions, S);
            for (std::size_t s = 0; s < S; ++s) EXPECT_EQ(res.positions[s], s);
          }
        }
      }
    }
}

TYPED_TEST(step_typed, full_rank_gives_the_exact_attention_distribution) {
  using T = TypeParam;
  rng r(102);
  int exact = 0, total = 0;
  for (std::size_t d : {16, 64, 128})
    for (std::size_t S : {65, 300, 1000})
      for (std::size_t g : {1, 4, 8}) {
        const auto head = random_head<T>(r, S, d, layout{1, 2, 1});
        const auto q = random_queries(r, g, d, 1.0f);
        sparq::config cfg;
        cfg.rank = d;
        cfg.top_k = S / 4;
        cfg.local = cfg.top_k / 4;
        const double scale = cfg.scale_for(d);
        // The true attention distribution of every head, and its group sum.
        std::vector<double> true_sel(S, 0.0);
        const auto ref = sparq::ref::sparq<T>(q.data(), g, head.view(), cfg);
        for (std::size_t h = 0; h < g; ++h) {
          std::vector<double> logit(S);
          for (std::size_t s = 0; s < S; ++s) {
            double acc = 0;
            for (std::size_t i = 0; i < d; ++i) acc += double(q[h * d + i]) * head.key(s, i);
            logit[s] = acc * scale;
          }
          const auto p = softmax64(logit);
          for (std::size_t s = 0; s < S; ++s) {
            // r = d: coverage 1, so the oracle's approximate weights are the true ones.
            ASSERT_NEAR(ref.shat[h * S + s], p[s], 1e-12 + 1e-9 * p[s]);
            true_sel[s] += p[s];
          }
        }
        // The step's selection is the window plus the top of the true attention.
        scratch_buffer buf(sparq::step_workspace_bytes(g, S, d, cfg));
        std::vector<float> out(g * d);
        const auto res = sparq::step<T>(q.data(), g, head.view(), cfg, buf.ws(), out.data());
        const auto i2 = to_vec(res.positions, res.n_positions);
        const std::size_t rest = S - cfg.local, kr = cfg.top_k - cfg.local;
        const std::vector<double> sel_rest(true_sel.begin(), true_sel.begin() + rest);
        EXPECT_TRUE(valid_top_k(sel_rest, std::vector<std::uint32_t>(i2.begin(), i2.begin() + kr), kr, select_tol));
        ++total;
        if (clear_gap(sel_rest, kr, select_tol)) {
          ++exact;
          auto want = sparq::ref::top_k(sel_rest, kr);
          for (std::size_t s = rest; s < S; ++s) want.push_back(static_cast<std::uint32_t>(s));
          EXPECT_EQ(i2, want) << "d=" << d << " S=" << S << " g=" << g;
        }
        // Full-rank components are every index.
        ASSERT_EQ(res.n_components, d);
        for (std::size_t i = 0; i < d; ++i) EXPECT_EQ(res.components[i], i);
      }
  EXPECT_GE(exact * 10, total * 8) << exact << " of " << total;
}

TYPED_TEST(step_typed, local_window_is_gathered_even_when_it_scores_lowest) {
  using T = TypeParam;
  const std::size_t S = 203, d = 32, g = 4;
  rng r(103);
  auto q = random_queries(r, g, d, 1.0f);
  // Keys: the last 10 positions point against every query (lowest scores), the rest along.
  std::vector<float> K(S * d), V = random_rows(r, S, d);
  for (std::size_t s = 0; s < S; ++s)
    for (std::size_t i = 0; i < d; ++i) {
      double sum = 0;
      for (std::size_t h = 0; h < g; ++h) sum += q[h * d + i];
      K[s * d + i] = static_cast<float>((s >= S - 10 ? -1.0 : 0.5) * sum + 0.1 * r.normal());
    }
  const head_data<T> head(K, V, S, d, layout{0, 0, 1});
  for (std::size_t local : {1, 5, 10, 16}) {
    sparq::config cfg;
    cfg.rank = 8;
    cfg.top_k = 16;
    cfg.local = local;
    tallies t;
    check_step(head, q, g, cfg, t, "local=" + std::to_string(local));
    scratch_buffer buf(sparq::step_workspace_bytes(g, S, d, cfg));
    std::vector<float> out(g * d);
    const auto res = sparq::step<T>(q.data(), g, head.view(), cfg, buf.ws(), out.data());
    for (std::size_t s = S - local; s < S; ++s)
      EXPECT_TRUE(std::find(res.positions, res.positions + res.n_positions, s) != res.positions + res.n_positions)
          << "window position " << s << " missing (local=" << local << ")";
  }
}

TYPED_TEST(step_typed, one_selection_per_group) {
  // Two heads of a group want different positions. The group gathers one set, chosen by the
  // summed weights, and every head attends over that same set (not its own favourites).
  using T = TypeParam;
  const std::size_t S = 150, d = 16, g = 2;
  rng r(104);
  std::vector<float> K = random_rows(r, S, d, 0.3f), V = random_rows(r, S, d);
  for (std::size_t s = 0; s < S; ++s) K[s * d + 0] = 0.1f * r.normal(), K[s * d + 1] = 0.1f * r.normal();
  std::vector<float> q(g * d, 0.0f);
  q[0 * d + 0] = 4.0f;  // head 0 looks along dimension 0
  q[1 * d + 1] = 4.0f;  // head 1 along dimension 1
  // Head 0's favourites: 10, 40, 90 (strong), head 1's: 20, 60 (weaker).
  for (std::size_t s : {10, 40, 90}) K[s * d + 0] = 3.0f + 0.1f * float(s % 7);
  for (std::size_t s : {20, 60}) K[s * d + 1] = 2.0f + 0.1f * float(s % 7);
  const head_data<T> head(K, V, S, d);
  sparq::config cfg;
  cfg.rank = 2;
  cfg.top_k = 4;
  cfg.local = 0;
  scratch_buffer buf(sparq::step_workspace_bytes(g, S, d, cfg));
  std::vector<float> out(g * d);
  const auto res = sparq::step<T>(q.data(), g, head.view(), cfg, buf.ws(), out.data());
  const auto group_pos = to_vec(res.positions, res.n_positions);
  const auto ref = sparq::ref::sparq<T>(q.data(), g, head.view(), cfg);
  EXPECT_EQ(group_pos, ref.positions);
  EXPECT_EQ(to_vec(res.components, res.n_components), ref.components);
  EXPECT_LT(rel_l2(out.data(), ref.out), out_tol);

  // Each head alone would choose differently; the group's set is neither head's own.
  for (std::size_t h = 0; h < g; ++h) {
    scratch_buffer b1(sparq::step_workspace_bytes(1, S, d, cfg));
    std::vector<float> o1(d);
    const auto alone = sparq::step<T>(q.data() + h * d, 1, head.view(), cfg, b1.ws(), o1.data());
    EXPECT_NE(to_vec(alone.positions, alone.n_positions), group_pos) << "h=" << h;
    // Head h's group output is attention over the group's positions.
    const auto given = sparq_given<T>(q.data(), g, head.view(), cfg, ref.components, group_pos);
    EXPECT_LT(rel_l2(out.data() + h * d, std::vector<double>(given.out.begin() + h * d, given.out.begin() + (h + 1) * d)), out_tol);
  }
}

TYPED_TEST(step_typed, exact_ties_go_to_the_lower_index) {
  // Identical key rows give exactly equal scores; the spec breaks such ties by index. The
  // duplicated rows sit both in the SIMD body and in the scalar tail of every vector width
  // (S = 4*16+3), and they are the best-scoring rows, so k cuts through them.
  using T = TypeParam;
  rng r(105);
  for (std::size_t S : {67, 131, 1003}) {
    const std::size_t d = 32, g = 4;
    const auto q = random_queries(r, g, d, 1.0f);
    std::vector<float> K = random_rows(r, S, d, 0.2f), V = random_rows(r, S, d);
    std::vector<float> best(d);
    for (std::size_t i = 0; i < d; ++i) best[i] = q[i] + q[d + i] + q[2 * d + i] + q[3 * d + i];
    const std::vector<std::size_t> dup = {3, 20, 40, S - 4, S - 1};
    for (std::size_t s : dup)
      for (std::size_t i = 0; i < d; ++i) K[s * d + i] = best[i] * 0.5f;
    const head_data<T> head(K, V, S, d, layout{1, 1, 1});
    for (std::size_t rank : {4, 32}) {
      for (auto [k, local] : {std::pair<std::size_t, std::size_t>{1, 0}, {2, 0}, {3, 0}, {4, 0}, {2, 1}, {4, 2}}) {
        sparq::config cfg;
        cfg.rank = rank;
        cfg.top_k = k;
        cfg.local = local;
        scratch_buffer buf(sparq::step_workspace_bytes(g, S, d, cfg));
        std::vector<float> out(g * d);
        const auto res = sparq::step<T>(q.data(), g, head.view(), cfg, buf.ws(), out.data());
        // The window, plus the lowest-indexed duplicates outside it.
        std::vector<std::uint32_t> want;
        for (std::size_t s : dup)
          if (s < S - local && want.size() < k - local) want.push_back(static_cast<std::uint32_t>(s));
        for (std::size_t s = S - local; s < S; ++s) want.push_back(static_cast<std::uint32_t>(s));
        EXPECT_EQ(to_vec(res.positions, res.n_positions), want)
            << type_name<T>() << " S=" << S << " r=" << rank << " k=" << k << " l=" << local;
        EXPECT_EQ(to_vec(res.positions, res.n_positions),
                  sparq::ref::sparq<T>(q.data(), g, head.view(), cfg).positions);
      }
    }
  }
}

TYPED_TEST(step_typed, zero_query_ties_everything) {
  // q = 0: every approximate weight is 1/S exactly, so the first k - l positions and the window.
  using T = TypeParam;
  rng r(106);
  for (std::size_t S : {20, 67, 500}) {
    const std::size_t d = 64, g = 4;
    const auto head = random_head<T>(r, S, d);
    std::vector<float> q(g * d, 0.0f), out(g * d);
    sparq::config cfg;
    cfg.rank = 8;
    cfg.top_k = 12;
    cfg.local = 3;
    scratch_buffer buf(sparq::step_workspace_bytes(g, S, d, cfg));
    const auto res = sparq::step<T>(q.data(), g, head.view(), cfg, buf.ws(), out.data());
    std::vector<std::uint32_t> want;
    for (std::uint32_t s = 0; s < 9; ++s) want.push_back(s);
    for (std::size_t s = S - 3; s < S; ++s) want.push_back(static_cast<std::uint32_t>(s));
    EXPECT_EQ(to_vec(res.positions, res.n_positions), want) << "S=" << S;
    const auto ref = sparq::ref::sparq<T>(q.data(), g, head.view(), cfg);
    EXPECT_EQ(to_vec(res.positions, res.n_positions), ref.positions);
    EXPECT_LT(rel_l2(out.data(), ref.out), out_tol);
    for (std::size_t h = 0; h < g; ++h) EXPECT_NEAR(res.alpha[h], 12.0 / double(S), 1e-6);
  }
}

TYPED_TEST(step_typed, repeated_calls_are_bit_identical) {
  using T = TypeParam;
  rng r(107);
  for (std::size_t S : {67, 1000}) {
    const std::size_t d = 128, g = 8;
    const auto head = random_head<T>(r, S, d, layout{3, 5, 1});
    const auto q = random_queries(r, g, d, 1.0f);
    sparq::config cfg;
    cfg.rank = 16;
    cfg.top_k = 40;
    cfg.local = 8;
    const std::size_t bytes = sparq::step_workspace_bytes(g, S, d, cfg);
    scratch_buffer b1(bytes, 0), b2(bytes + 100, 37);
    std::vector<float> o1(g * d), o2(g * d), o3(g * d);
    const auto r1 = sparq::step<T>(q.data(), g, head.view(), cfg, b1.ws(), o1.data());
    const auto p1 = to_vec(r1.positions, r1.n_positions);
    const auto c1 = to_vec(r1.components, r1.n_components);
    const std::vector<float> a1(r1.alpha, r1.alpha + g);
    const auto r2 = sparq::step<T>(q.data(), g, head.view(), cfg, b1.ws(), o2.data());
    const auto r3 = sparq::step<T>(q.data(), g, head.view(), cfg, b2.ws(), o3.data());
    EXPECT_EQ(std::memcmp(o1.data(), o2.data(), o1.size() * 4), 0);
    EXPECT_EQ(std::memcmp(o1.data(), o3.data(), o1.size() * 4), 0);
    for (const auto* rr : {&r2, &r3}) {
      EXPECT_EQ(to_vec(rr->positions, rr->n_positions), p1);
      EXPECT_EQ(to_vec(rr->components, rr->n_components), c1);
      EXPECT_EQ(std::memcmp(rr->alpha, a1.data(), g * 4), 0);
    }
    // checked_step is the same computation.
    std::vector<float> o4(g * d);
    const auto r4 = sparq::checked_step<T>(q.data(), g, head.view(), cfg, b2.ws(), o4.data());
    EXPECT_EQ(std::memcmp(o1.data(), o4.data(), o1.size() * 4), 0);
    EXPECT_EQ(to_vec(r4.positions, r4.n_positions), p1);
  }
}

TYPED_TEST(step_typed, a_workspace_sized_for_the_capacity_serves_shorter_lengths) {
  using T = TypeParam;
  rng r(108);
  const std::size_t cap = 700, d = 64, g = 4;
  sparq::config cfg;
  cfg.rank = 8;
  cfg.top_k = 32;
  cfg.local = 8;
  scratch_buffer buf(sparq::step_workspace_bytes(g, cap, d, cfg), 5);
  tallies t;
  for (std::size_t S : {1, 33, 64, 65, 300, 700}) {
    const auto head = random_head<T>(r, S, d);
    const auto q = random_queries(r, g, d, 1.0f);
    std::vector<float> out(g * d), out_own(g * d);
    sparq::step<T>(q.data(), g, head.view(), cfg, buf.ws(), out.data());
    scratch_buffer own(sparq::step_workspace_bytes(g, S, d, cfg));
    sparq::step<T>(q.data(), g, head.view(), cfg, own.ws(), out_own.data());
    EXPECT_EQ(out, out_own) << "S=" << S;
    check_step(head, q, g, cfg, t, "S=" + std::to_string(S));
  }
}

}  // namespace
