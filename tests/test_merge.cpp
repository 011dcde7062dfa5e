// sparq::merge_state: attention states (out, lse) of disjoint position sets merge into the
// state of their union. Checked against one dense_step / attend_positions over the union and
// against the float64 oracle, for every storage type, GQA group sizes, odd and empty splits,
// caller-chosen (page-shaped) selections and three-way merges in both association orders.

#include <sparq/dense.hpp>
#include <sparq/kv_cache.hpp>
#include <sparq/merge.hpp>
#include <sparq/ref.hpp>
#include <sparq/stage2_attend.hpp>
#include <sparq/step.hpp>
#include <sparq/workspace.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

namespace {

constexpr float neg_inf = -std::numeric_limits<float>::infinity();

/// max |a - b| / max |b| (b the reference).
double rel_err(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    num = std::max(num, std::fabs(double(a[i]) - double(b[i])));
    den = std::max(den, std::fabs(double(b[i])));
  }
  return den > 0 ? num / den : num;
}
double rel_err(const std::vector<float>& a, const std::vector<double>& b) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    num = std::max(num, std::fabs(double(a[i]) - b[i]));
    den = std::max(den, std::fabs(b[i]));
  }
  return den > 0 ? num / den : num;
}

/// An attention state: out [g][d] and lse [g].
struct state {
  std::vector<float> out, lse;
  state(std::size_t g, std::size_t d) : out(g * d, 0.0f), lse(g, 0.0f) {}
};

state merged(const state& a, const state& b, std::size_t g, std::size_t d) {
  state r(g, d);
  sparq::merge_state(a.out.data(), a.lse.data(), b.out.data(), b.lse.data(), g, d, r.out.data(),
                     r.lse.data());
  return r;
}

void expect_same_state(const state& got, const state& want, double tol, const char* what) {
  EXPECT_LT(rel_err(got.out, want.out), tol) << what;
  for (std::size_t h = 0; h < want.lse.size(); ++h)
    EXPECT_NEAR(got.lse[h], want.lse[h], tol * std::max(1.0f, std::fabs(want.lse[h])))
        << what << " head " << h;
}

/// A one-sequence, one-head cache of S random positions (keys spread so the softmax is
/// neither flat nor one-hot) and g random query heads.
template <class T>
struct fixture {
  std::size_t S, d, g;
  sparq::kv_cache<T> cache;
  std::vector<float> q;
  std::vector<unsigned char> scratch;

  fixture(std::size_t S_, std::size_t d_, std::size_t g_, unsigned seed)
      : S(S_), d(d_), g(g_), cache(1, 1, S_, d_, false), q(g_ * d_),
        scratch(sparq::dense_workspace_bytes(g_, d_) + sparq::attend_scratch_floats(g_, d_) * 4) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> n01(0.0f, 1.0f);
    std::vector<float> k(d), v(d);
    for (std::size_t s = 0; s < S; ++s) {
      const float spread = 1.0f + 2.0f * float(s % 7) / 7.0f;  // some keys stand out
      for (std::size_t i = 0; i < d; ++i) {
        k[i] = spread * n01(rng);
        v[i] = n01(rng);
      }
      cache.append(0, k.data(), v.data());
    }
    for (float& x : q) x = 1.5f * n01(rng);
  }

  sparq::rows_view<const T> keys() const { return cache.keys(0, 0); }
  sparq::rows_view<const T> values() const { return cache.values(0, 0); }

  /// Positions [lo, hi) as views: offset data, shorten length.
  static sparq::rows_view<const T> slice(sparq::rows_view<const T> r, std::size_t lo, std::size_t hi) {
    return {r.data + lo * r.row_stride, hi - lo, r.dim, r.row_stride};
  }

  /// dense_step over [lo, hi); an empty range is the empty state (lse = -inf), as
  /// attend_positions with n = 0 returns it.
  state dense(std::size_t lo, std::size_t hi) {
    state st(g, d);
    if (lo == hi) {
      attend_positions(q.data(), g, keys(), values(), nullptr, 0, scale(), scratch_floats(),
                       st.out.data(), st.lse.data());
      return st;
    }
    sparq::dense_step(q.data(), g, slice(keys(), lo, hi), slice(values(), lo, hi), scale(),
                      sparq::workspace{scratch.data(), scratch.size()}, st.out.data(), st.lse.data());
    return st;
  }

  state attend(const std::vector<std::uint32_t>& pos) {
    state st(g, d);
    sparq::attend_positions(q.data(), g, keys(), values(), pos.data(), pos.size(), scale(),
                            scratch_floats(), st.out.data(), st.lse.data());
    return st;
  }

  float scale() const { return 1.0f / std::sqrt(float(d)); }
  float* scratch_floats() {
    // attend_positions wants float scratch; carve it 64-byte aligned from the byte buffer.
    return reinterpret_cast<float*>(sparq::detail::align64(scratch.data()));
  }
};

template <class T>
class MergeTyped : public ::testing::Test {};
using storage_types = ::testing::Types<float, sparq::f16, sparq::bf16>;
TYPED_TEST_SUITE(MergeTyped, storage_types);

// Two halves of the cache, attended separately, merge into one dense_step over all S.
TYPED_TEST(MergeTyped, DenseHalvesEqualDenseWhole) {
  using T = TypeParam;
  for (std::size_t g : {std::size_t{1}, std::size_t{4}}) {
    for (std::size_t d : {std::size_t{64}, std::size_t{128}, std::size_t{40}}) {
      const std::size_t S = 301;  // odd, not a multiple of any block size
      fixture<T> f(S, d, g, unsigned(7 * g + d));
      const state whole = f.dense(0, S);
      for (std::size_t m : {std::size_t{0}, std::size_t{1}, std::size_t{17}, std::size_t{150},
                            std::size_t{151}, std::size_t{299}, std::size_t{300}, S}) {
        SCOPED_TRACE(::testing::Message() << "g " << g << " d " << d << " split " << m);
        const state a = f.dense(0, m), b = f.dense(m, S);
        expect_same_state(merged(a, b, g, d), whole, 1e-5, "merge(a, b)");
        expect_same_state(merged(b, a, g, d), whole, 1e-5, "merge(b, a)");
      }
    }
  }
}

// Merging with an empty segment returns the other state bit for bit, whatever the empty
// segment's out holds; two empty segments give out = 0, lse = -inf.
TEST(Merge, EmptySegmentIsIdentity) {
  const std::size_t g = 4, d = 64;
  fixture<float> f(100, d, g, 3);
  const state full = f.dense(0, 100);
  state empty(g, d);
  std::fill(empty.out.begin(), empty.out.end(), std::numeric_limits<float>::quiet_NaN());
  std::fill(empty.lse.begin(), empty.lse.end(), neg_inf);
  for (const state& r : {merged(full, empty, g, d), merged(empty, full, g, d)}) {
    EXPECT_EQ(r.out, full.out);
    EXPECT_EQ(r.lse, full.lse);
  }
  const state none = merged(empty, empty, g, d);
  for (float x : none.out) EXPECT_EQ(x, 0.0f);
  for (float x : none.lse) EXPECT_EQ(x, neg_inf);
  // The kernels return exactly this state for zero positions.
  const state zero = f.dense(5, 5);
  for (float x : zero.lse) EXPECT_EQ(x, neg_inf);
  const state r = merged(zero, full, g, d);
  EXPECT_EQ(r.out, full.out);
  EXPECT_EQ(r.lse, full.lse);
}

// Per-head emptiness: one head empty in a, another empty in b.
TEST(Merge, MixedEmptyHeads) {
  const std::size_t g = 2, d = 3;
  state a(g, d), b(g, d);
  a.out = {1, 2, 3, 9, 9, 9};
  a.lse = {0.5f, neg_inf};
  b.out = {7, 7, 7, 4, 5, 6};
  b.lse = {neg_inf, -2.0f};
  const state r = merged(a, b, g, d);
  EXPECT_EQ(r.out, (std::vector<float>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(r.lse, (std::vector<float>{0.5f, -2.0f}));
}

// Huge and tiny lse do not overflow: the merge works around the max.
TEST(Merge, StableForLargeLse) {
  const std::size_t g = 1, d = 2;
  state a(g, d), b(g, d);
  a.out = {1, 0};
  a.lse = {1000.0f};
  b.out = {0, 1};
  b.lse = {1000.0f + std::log(3.0f)};
  const state r = merged(a, b, g, d);
  // 1000 + log 3 is rounded to fp32 (ulp 6e-5): expect the weights of the stored difference.
  const double w = std::exp(double(b.lse[0]) - double(a.lse[0]));
  EXPECT_NEAR(r.out[0], 1.0 / (1.0 + w), 1e-6);
  EXPECT_NEAR(r.out[1], w / (1.0 + w), 1e-6);
  EXPECT_NEAR(r.lse[0], 1000.0 + std::log(1.0 + w), 1e-4);
  b.lse = {-1000.0f};  // negligible next to a
  const state s = merged(a, b, g, d);
  EXPECT_EQ(s.out[0], 1.0f);
  EXPECT_EQ(s.out[1], 0.0f);
  EXPECT_EQ(s.lse[0], 1000.0f);
}

TEST(Merge, InPlaceAndAliasing) {
  const std::size_t g = 4, d = 64, S = 257;
  fixture<sparq::f16> f(S, d, g, 11);
  const state whole = f.dense(0, S);
  const state b = f.dense(100, S);
  state a = f.dense(0, 100);
  sparq::merge_state_inplace(a.out.data(), a.lse.data(), b.out.data(), b.lse.data(), g, d);
  expect_same_state(a, whole, 1e-5, "in place into a");
  state a2 = f.dense(0, 100), b2 = f.dense(100, S);  // out aliasing the second input
  sparq::merge_state(a2.out.data(), a2.lse.data(), b2.out.data(), b2.lse.data(), g, d,
                     b2.out.data(), b2.lse.data());
  expect_same_state(b2, whole, 1e-5, "into b");
}

// attend_positions over two disjoint caller-chosen index sets merges into attend_positions
// over their union.
TYPED_TEST(MergeTyped, DisjointIndexSetsEqualUnion) {
  using T = TypeParam;
  for (std::size_t g : {std::size_t{1}, std::size_t{4}}) {
    const std::size_t S = 513, d = 64;
    fixture<T> f(S, d, g, unsigned(100 + g));
    std::mt19937 rng(unsigned(5 + g));
    for (std::size_t n : {std::size_t{1}, std::size_t{2}, std::size_t{63}, std::size_t{200}, S}) {
      std::vector<std::uint32_t> all(S);
      std::iota(all.begin(), all.end(), 0u);
      std::shuffle(all.begin(), all.end(), rng);
      std::vector<std::uint32_t> uni(all.begin(), all.begin() + std::ptrdiff_t(n));
      std::bernoulli_distribution coin(0.3);
      std::vector<std::uint32_t> a, b;
      for (auto p : uni) (coin(rng) ? a : b).push_back(p);
      std::sort(a.begin(), a.end());
      std::sort(b.begin(), b.end());
      std::sort(uni.begin(), uni.end());
      SCOPED_TRACE(::testing::Message() << "g " << g << " |A| " << a.size() << " |B| " << b.size());
      expect_same_state(merged(f.attend(a), f.attend(b), g, d), f.attend(uni), 1e-5, "A u B");
    }
  }
}

// External selections: Quest-style pages (page-aligned runs of positions, the last one
// partial) chosen by the caller. attend_positions over them equals the float64 oracle on the
// gathered rows, and merging the pages one by one equals attending all of them at once.
TYPED_TEST(MergeTyped, PageSelectionsMatchOracleOnGatheredRows) {
  using T = TypeParam;
  const std::size_t S = 1000, d = 64, page = 16;  // 63 pages, the last holds 8 positions
  for (std::size_t g : {std::size_t{1}, std::size_t{4}}) {
    fixture<T> f(S, d, g, unsigned(42 + g));
    const std::vector<std::size_t> pages = {0, 3, 4, 17, 40, 62};
    std::vector<std::uint32_t> pos;
    std::vector<T> gk, gv;
    state by_page(g, d);
    std::fill(by_page.lse.begin(), by_page.lse.end(), neg_inf);  // start from the empty state
    for (std::size_t p : pages) {
      std::vector<std::uint32_t> one;
      for (std::size_t s = p * page; s < std::min(S, (p + 1) * page); ++s) {
        one.push_back(static_cast<std::uint32_t>(s));
        pos.push_back(static_cast<std::uint32_t>(s));
        const T* kr = f.keys().row(s);
        const T* vr = f.values().row(s);
        gk.insert(gk.end(), kr, kr + d);
        gv.insert(gv.end(), vr, vr + d);
      }
      const state st = f.attend(one);
      sparq::merge_state_inplace(by_page.out.data(), by_page.lse.data(), st.out.data(),
                                 st.lse.data(), g, d);
    }
    ASSERT_EQ(pos.size(), 5 * page + 8);
    const sparq::rows_view<const T> k{gk.data(), pos.size(), d, d};
    const sparq::rows_view<const T> v{gv.data(), pos.size(), d, d};
    const std::vector<double> want = sparq::ref::dense(f.q.data(), g, k, v, f.scale());
    const state got = f.attend(pos);
    SCOPED_TRACE(::testing::Message() << "g " << g);
    EXPECT_LT(rel_err(got.out, want), 1e-5);
    EXPECT_LT(rel_err(by_page.out, want), 1e-5);
    expect_same_state(by_page, got, 1e-5, "page by page vs all pages");
  }
}

// Three segments merged as (a b) c and a (b c) agree with each other and with the whole.
TYPED_TEST(MergeTyped, ThreeWayMergeIsAssociative) {
  using T = TypeParam;
  const std::size_t S = 777, d = 64;
  for (std::size_t g : {std::size_t{1}, std::size_t{4}}) {
    fixture<T> f(S, d, g, unsigned(9 + g));
    const state whole = f.dense(0, S);
    for (auto cut : {std::pair<std::size_t, std::size_t>{1, 2}, {100, 500}, {0, 400}, {333, 777},
                     {250, 251}}) {
      SCOPED_TRACE(::testing::Message() << "g " << g << " cuts " << cut.first << ", " << cut.second);
      const state a = f.dense(0, cut.first), b = f.dense(cut.first, cut.second),
                  c = f.dense(cut.second, S);
      const state left = merged(merged(a, b, g, d), c, g, d);
      const state right = merged(a, merged(b, c, g, d), g, d);
      const state outer = merged(merged(a, c, g, d), b, g, d);  // non-adjacent first
      expect_same_state(left, right, 1e-6, "(a b) c vs a (b c)");
      expect_same_state(left, whole, 1e-5, "(a b) c vs whole");
      expect_same_state(right, whole, 1e-5, "a (b c) vs whole");
      expect_same_state(outer, whole, 1e-5, "(a c) b vs whole");
    }
  }
}

// step_result::lse makes SparQ segments mergeable (with reallocation off): SparQ over
// positions [0, m) and over [m, S) separately, merged, equals exact attention over the union
// of the two selections; with k >= each segment's length it equals dense over all S.
TYPED_TEST(MergeTyped, SparqSegmentsMergeLikeTheirSelections) {
  using T = TypeParam;
  const std::size_t S = 600, d = 64, g = 4;
  sparq::kv_cache<T> cache(1, 1, S, d);
  std::mt19937 rng(77);
  std::normal_distribution<float> n01(0.0f, 1.0f);
  std::vector<float> k(d), v(d), q(g * d);
  for (std::size_t s = 0; s < S; ++s) {
    for (std::size_t i = 0; i < d; ++i) {
      k[i] = (1.0f + float(s % 5)) * n01(rng);
      v[i] = n01(rng);
    }
    cache.append(0, k.data(), v.data());
  }
  for (float& x : q) x = n01(rng);
  const sparq::kv_head_view<const T> all = cache.head(0, 0);
  auto segment = [&](std::size_t lo, std::size_t hi) {
    sparq::kv_head_view<const T> h = all;
    h.k = {all.k.data + lo * all.k.row_stride, hi - lo, d, all.k.row_stride};
    h.v = {all.v.data + lo * all.v.row_stride, hi - lo, d, all.v.row_stride};
    h.kt = {all.kt.data + lo, d, hi - lo, all.kt.dim_stride};
    return h;
  };
  const float scale = 1.0f / std::sqrt(float(d));
  sparq::config plan;
  plan.rank = 8;
  std::vector<unsigned char> wbuf(sparq::step_workspace_bytes(g, S, d, plan));
  const sparq::workspace ws{wbuf.data(), wbuf.size()};
  for (std::size_t top_k : {std::size_t{48}, std::size_t{S}}) {
    sparq::config cfg = plan;
    cfg.top_k = top_k;
    cfg.local = 8;
    cfg.reallocate = false;
    const std::size_t m = 237;
    state a(g, d), b(g, d);
    std::vector<std::uint32_t> uni;
    const sparq::step_result ra = sparq::checked_step(q.data(), g, segment(0, m), cfg, ws, a.out.data());
    a.lse.assign(ra.lse, ra.lse + g);
    uni.assign(ra.positions, ra.positions + ra.n_positions);
    const sparq::step_result rb = sparq::checked_step(q.data(), g, segment(m, S), cfg, ws, b.out.data());
    b.lse.assign(rb.lse, rb.lse + g);
    for (std::size_t i = 0; i < rb.n_positions; ++i) uni.push_back(static_cast<std::uint32_t>(m + rb.positions[i]));
    SCOPED_TRACE(::testing::Message() << "top_k " << top_k << " |union| " << uni.size());
    state want(g, d);
    std::vector<float> scratch(sparq::attend_scratch_floats(g, d));
    sparq::attend_positions(q.data(), g, all.k, all.v, uni.data(), uni.size(), scale, scratch.data(),
                            want.out.data(), want.lse.data());
    expect_same_state(merged(a, b, g, d), want, 1e-5, "merged SparQ segments vs their union");
    if (top_k >= S) {
      state dense(g, d);
      std::vector<unsigned char> dbuf(sparq::dense_workspace_bytes(g, d));
      sparq::dense_step(q.data(), g, all.k, all.v, scale, sparq::workspace{dbuf.data(), dbuf.size()},
                        dense.out.data(), dense.lse.data());
      expect_same_state(merged(a, b, g, d), dense, 1e-5, "k >= S: merged vs dense");
    }
  }
}

}  // namespace
