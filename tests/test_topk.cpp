// Tests for sparq::top_k (topk.hpp): the indices of the k largest values, ascending, lower
// index winning exact ties, NaN below everything. Checked against sparq::ref::top_k (a
// std::stable_sort oracle) on random, heavily tied, clustered (one histogram bucket) and
// special-valued inputs of sizes around every SIMD width, with misaligned scratch. The exact
// block-max prefilter batch_step uses on whole items (block_max_threshold, collect_key_at_least,
// keep_best) must pick the same indices as the oracle for every block size, its threshold
// must never exceed the want-th largest key, and it must let few values through. Each SIMD
// tier's vector loops (histogram, block maxima, collect) must match the scalar key
// definitions element by element, NaNs, signed zeros and tails included.

#include "test_util.hpp"

#include <algorithm>
#include <cmath>
#include <functional>
#include <cstdint>
#include <limits>
#include <vector>

namespace {

std::vector<std::uint32_t> run_top_k(const std::vector<float>& x, std::size_t k, std::size_t misalign = 0) {
  std::vector<std::uint32_t> out(x.size() + 1, 0xdeadbeefu);
  std::vector<unsigned char> scratch(sparq::top_k_scratch_bytes(x.size()) + misalign);
  const std::size_t n = sparq::top_k(x.data(), x.size(), k, out.data(), scratch.data() + misalign);
  EXPECT_LE(n, x.size());
  out.resize(n);
  return out;
}

std::vector<std::uint32_t> oracle(const std::vector<float>& x, std::size_t k) {
  return sparq::ref::top_k(std::vector<double>(x.begin(), x.end()), k);
}

const std::size_t sizes[] = {1, 2, 7, 15, 16, 17, 31, 32, 33, 63, 64, 65, 67, 127, 128, 129, 1000, 4099};

std::vector<std::size_t> ks_for(std::size_t n) {
  std::vector<std::size_t> ks = {0, 1, 2, 3, n / 2, n - 1, n, n + 5, 16, 64};
  return ks;
}

TEST(top_k, random_values_match_the_oracle) {
  sparq_test::rng r(1);
  for (std::size_t n : sizes) {
    std::vector<float> x(n);
    for (float& v : x) v = r.normal();
    for (std::size_t k : ks_for(n)) {
      const auto got = run_top_k(x, k, n % 7);
      EXPECT_EQ(got, oracle(x, k)) << "n=" << n << " k=" << k;
      EXPECT_EQ(got.size(), std::min(k, n));
    }
  }
}

TEST(top_k, exact_ties_go_to_the_lower_index) {
  sparq_test::rng r(2);
  for (std::size_t n : sizes) {
    // Few distinct values: almost every boundary falls inside a run of equal values.
    std::vector<float> x(n);
    for (float& v : x) v = static_cast<float>(r.index(4));
    for (std::size_t k : ks_for(n)) EXPECT_EQ(run_top_k(x, k, 5), oracle(x, k)) << "n=" << n << " k=" << k;
    // All equal: the first k indices.
    std::vector<float> same(n, 0.25f);
    for (std::size_t k : ks_for(n)) {
      std::vector<std::uint32_t> first(std::min(k, n));
      for (std::size_t i = 0; i < first.size(); ++i) first[i] = static_cast<std::uint32_t>(i);
      EXPECT_EQ(run_top_k(same, k, 1), first) << "n=" << n << " k=" << k;
    }
  }
}

TEST(top_k, hand_written_ties) {
  EXPECT_EQ(run_top_k({1, 3, 3, 2, 3}, 2), (std::vector<std::uint32_t>{1, 2}));
  EXPECT_EQ(run_top_k({1, 3, 3, 2, 3}, 3), (std::vector<std::uint32_t>{1, 2, 4}));
  EXPECT_EQ(run_top_k({5, 1, 5, 1, 5, 1}, 4), (std::vector<std::uint32_t>{0, 1, 2, 4}));
  EXPECT_EQ(run_top_k({-2, -2, -2}, 1), (std::vector<std::uint32_t>{0}));
}

TEST(top_k, values_inside_one_histogram_bucket) {
  // Values 1 + j ulp share their top exponent/mantissa bits, so selection falls to the
  // in-bucket ranking; shuffled, with duplicates.
  sparq_test::rng r(3);
  for (std::size_t n : {17, 100, 1000, 5000}) {
    std::vector<float> x(n);
    for (float& v : x) v = 1.0f + static_cast<float>(r.index(n / 2 + 1)) * std::numeric_limits<float>::epsilon();
    for (std::size_t k : {1, 2, 10, 99, 500}) {
      if (k < n) {
        EXPECT_EQ(run_top_k(x, k, 3), oracle(x, k)) << "n=" << n << " k=" << k;
      }
    }
  }
}

TEST(top_k, negative_and_infinite_values) {
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> x = {-1, -inf, 2, inf, -3, 0, -0.5f, inf, -inf, 1e-30f, -1e-30f};
  for (std::size_t k = 0; k <= x.size(); ++k) EXPECT_EQ(run_top_k(x, k), oracle(x, k)) << "k=" << k;
}

TEST(top_k, nan_ranks_below_everything) {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  // NaN at low indices must lose to every number, even -inf.
  const std::vector<float> x = {nan, -inf, nan, -5, nan};
  EXPECT_EQ(run_top_k(x, 1), (std::vector<std::uint32_t>{3}));
  EXPECT_EQ(run_top_k(x, 2), (std::vector<std::uint32_t>{1, 3}));
  EXPECT_EQ(run_top_k(x, 3), (std::vector<std::uint32_t>{0, 1, 3}));  // then NaNs, lower first
  EXPECT_EQ(run_top_k(x, 4), (std::vector<std::uint32_t>{0, 1, 2, 3}));
  const std::vector<float> all_nan(20, nan);
  EXPECT_EQ(run_top_k(all_nan, 3), (std::vector<std::uint32_t>{0, 1, 2}));
  const std::vector<float> neg_nan = {-nan, 1.0f, -nan};
  EXPECT_EQ(run_top_k(neg_nan, 2), (std::vector<std::uint32_t>{0, 1}));
}

TEST(top_k, signed_zeros_are_an_exact_tie) {
  // -0.0 == +0.0, so the spec's tie rule applies: the lower index wins whatever the sign bit.
  EXPECT_EQ(run_top_k({-0.0f, 0.0f}, 1), (std::vector<std::uint32_t>{0}));
  EXPECT_EQ(run_top_k({-0.0f, 0.0f, -0.0f, 0.0f}, 2), (std::vector<std::uint32_t>{0, 1}));
}

TEST(top_k, subnormal_values_rank_by_value) {
  const float dm = std::numeric_limits<float>::denorm_min();
  const std::vector<float> x = {dm, 0.0f, 3 * dm, 2 * dm, std::numeric_limits<float>::min(), -dm};
  for (std::size_t k = 0; k <= x.size(); ++k) EXPECT_EQ(run_top_k(x, k), oracle(x, k)) << "k=" << k;
}

TEST(top_k, scratch_alignment_does_not_change_the_result) {
  sparq_test::rng r(4);
  std::vector<float> x(777);
  for (float& v : x) v = static_cast<float>(r.index(50));
  const auto base = run_top_k(x, 100, 0);
  for (std::size_t m = 1; m < 64; m += 7) EXPECT_EQ(run_top_k(x, 100, m), base) << m;
  EXPECT_EQ(base, oracle(x, 100));
}

TEST(top_k, does_not_write_past_n_outputs) {
  std::vector<float> x = {3, 1, 2, 5, 4};
  std::vector<std::uint32_t> out(8, 0xdeadbeefu);
  std::vector<unsigned char> scratch(sparq::top_k_scratch_bytes(x.size()));
  EXPECT_EQ(sparq::top_k(x.data(), x.size(), 2, out.data(), scratch.data()), 2u);
  EXPECT_EQ(out[0], 3u);
  EXPECT_EQ(out[1], 4u);
  for (std::size_t i = x.size(); i < out.size(); ++i) EXPECT_EQ(out[i], 0xdeadbeefu);
}

// Values that stress the key transform: NaNs of both signs and payloads, signed zeros,
// infinities, subnormals, the float extremes, exact ties and plain normals.
std::vector<float> key_stress_values(std::size_t n, std::uint32_t seed) {
  const float special[] = {std::numeric_limits<float>::quiet_NaN(),
                           -std::numeric_limits<float>::quiet_NaN(),
                           sparq::detail::bits_float(0x7f800001u),  // signalling-NaN bits
                           sparq::detail::bits_float(0xffffffffu),
                           0.0f, -0.0f,
                           std::numeric_limits<float>::infinity(),
                           -std::numeric_limits<float>::infinity(),
                           std::numeric_limits<float>::denorm_min(),
                           -std::numeric_limits<float>::denorm_min(),
                           std::numeric_limits<float>::max(), -std::numeric_limits<float>::max(),
                           1.0f, -1.0f};
  sparq_test::rng r(seed);
  std::vector<float> x(n);
  for (float& v : x) {
    const std::size_t c = r.index(4);
    v = c == 0 ? special[r.index(sizeof special / sizeof special[0])]
        : c == 1 ? static_cast<float>(r.index(3)) - 1.0f
                 : r.normal();
  }
  return x;
}

// Each SIMD tier's vector loops in the key pipeline (AVX-512 intrinsics, or xsimd int32
// batches on AVX2 / SSE2 / NEON) against the scalar definitions, element by element: the
// bucket counts, each block's lane maxima, and the indices reaching a key, at every length
// and start around the vector widths (tails included).
TEST(top_k_kernels, vector_loops_match_the_scalar_key_definitions) {
  using namespace sparq::detail;
  for (std::size_t n : {0, 1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 33, 47, 64, 65, 100, 1000}) {
    const std::vector<float> x = key_stress_values(n, static_cast<std::uint32_t>(40 + n));
    // histogram_keys: the two copies together = one count per bucket_of.
    std::vector<std::uint32_t> h1(topk_buckets, 0), h2(topk_buckets, 0), want(topk_buckets, 0);
    histogram_keys(x.data(), n, h1.data(), h2.data());
    for (float v : x) ++want[bucket_of(v)];
    for (std::size_t b = 0; b < topk_buckets; ++b)
      ASSERT_EQ(h1[b] + h2[b], want[b]) << "n=" << n << " bucket " << b;
    // block_max_threshold: maxima of lane l of V consecutive 16-value vectors (0 past n).
    for (std::size_t V : {1, 2, 3}) {
      const std::size_t nb = (n + 16 * V - 1) / (16 * V) * 16;
      if (n == 0) continue;
      std::vector<std::uint32_t> got(nb + 1, 0xdeadbeefu), ref(nb, 0);
      block_max_threshold(x.data(), n, 1, V, got.data());
      for (std::size_t i = 0; i < n; ++i) {
        const std::size_t blk = i / (16 * V), lane = i % 16;
        ref[blk * 16 + lane] = std::max(ref[blk * 16 + lane], order_key(x[i]));
      }
      for (std::size_t i = 0; i < nb; ++i)
        ASSERT_EQ(got[i], ref[i]) << "n=" << n << " V=" << V << " maximum " << i;
      EXPECT_EQ(got[nb], 0xdeadbeefu) << "wrote past the maxima";
    }
    // collect_key_at_least from several starts, for keys of the values themselves and the ends.
    std::vector<std::uint32_t> los = {0u, 1u, 0x80000000u, 0xffffffffu};
    for (std::size_t i = 0; i < n; i += 7) los.push_back(order_key(x[i]));
    for (std::size_t s0 : {std::size_t{0}, std::size_t{1}, std::size_t{5}}) {
      if (s0 > n) continue;
      for (std::uint32_t lo : los) {
        std::vector<std::uint32_t> got(n - s0 + 1, 0xdeadbeefu), ref;
        const std::size_t m = sparq::detail::collect_key_at_least(x.data(), s0, n, lo, got.data());
        ASSERT_EQ(got[n - s0], 0xdeadbeefu) << "wrote past s1 - s0 entries: n=" << n << " s0=" << s0;
        got.resize(m);
        for (std::size_t i = s0; i < n; ++i)
          if (order_key(x[i]) >= lo) ref.push_back(static_cast<std::uint32_t>(i));
        ASSERT_EQ(got, ref) << "n=" << n << " s0=" << s0 << " lo=" << lo;
      }
    }
  }
}

// The prefilter pipeline batch_step::select_whole runs: threshold, collect, keep_best.
std::vector<std::uint32_t> run_prefilter(const std::vector<float>& x, std::size_t want,
                                         std::size_t V, std::size_t* collected = nullptr) {
  const std::size_t n = x.size();
  std::vector<std::uint32_t> keys((n + 16 * V - 1) / (16 * V) * 16 + 1, 0xdeadbeefu);
  const std::uint32_t lo = sparq::detail::block_max_threshold(x.data(), n, want, V, keys.data());
  EXPECT_EQ(keys.back(), 0xdeadbeefu) << "wrote past the maxima";
  // The threshold is a lower bound of the want-th largest key.
  std::vector<std::uint32_t> all(n);
  for (std::size_t i = 0; i < n; ++i) all[i] = sparq::detail::order_key(x[i]);
  std::nth_element(all.begin(), all.begin() + (want - 1), all.end(), std::greater<>());
  EXPECT_LE(lo, all[want - 1]) << "threshold above the want-th largest key";
  // The output must hold n entries (past the count they are scratch); nothing beyond.
  std::vector<std::uint32_t> list(n + 1, 0xdeadbeefu);
  std::size_t m = sparq::detail::collect_key_at_least(x.data(), 0, n, lo, list.data());
  EXPECT_GE(m, want);
  EXPECT_EQ(list[n], 0xdeadbeefu);
  if (collected) *collected = m;
  std::vector<std::uint64_t> cand(m);
  m = sparq::detail::keep_best(x.data(), list.data(), m, want, cand.data());
  list.resize(m);
  return list;
}

TEST(top_k_prefilter, matches_the_oracle_for_every_block_size) {
  sparq_test::rng r(11);
  for (std::size_t n : {1, 15, 16, 17, 255, 256, 257, 1000, 4099, 20000}) {
    std::vector<float> x(n), ties(n);
    for (float& v : x) v = r.normal();
    for (float& v : ties) v = static_cast<float>(r.index(5));
    for (std::size_t V : {1, 2, 4, 8, 16}) {
      const std::size_t blocks = (n + 16 * V - 1) / (16 * V) * 16;
      for (std::size_t want : {std::size_t{1}, std::size_t{3}, n / 16, n / 5, n - 1, n}) {
        if (want == 0 || want > blocks || want > n) continue;
        EXPECT_EQ(run_prefilter(x, want, V), oracle(x, want)) << "n=" << n << " V=" << V << " want=" << want;
        EXPECT_EQ(run_prefilter(ties, want, V), oracle(ties, want))
            << "ties: n=" << n << " V=" << V << " want=" << want;
      }
    }
  }
}

TEST(top_k_prefilter, special_values_and_all_equal) {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  std::vector<float> x;
  for (int i = 0; i < 70; ++i) {
    const float v[] = {nan, -inf, -0.0f, 0.0f, inf, 1e-40f, -2.0f};
    x.push_back(v[i % 7]);
  }
  for (std::size_t V : {1, 2, 4}) {
    for (std::size_t want : {1, 5, 10, 16, 30}) {
      if (want <= (x.size() + 16 * V - 1) / (16 * V) * 16) {
        EXPECT_EQ(run_prefilter(x, want, V), oracle(x, want)) << "V=" << V << " want=" << want;
      }
    }
  }
  // All equal: every value reaches the threshold; the lowest indices win.
  std::vector<float> same(300, 0.5f);
  std::size_t m = 0;
  const auto got = run_prefilter(same, 7, 2, &m);
  EXPECT_EQ(m, same.size());
  EXPECT_EQ(got, (std::vector<std::uint32_t>{0, 1, 2, 3, 4, 5, 6}));
}

TEST(top_k_prefilter, filters_most_values_at_the_sparq_ratio) {
  // k = n/16 of independent values (SparQ's k = S/16 with l = k/4): the block size
  // prefilter_vectors picks keeps well under a tenth of the values.
  sparq_test::rng r(12);
  const std::size_t n = 65536, want = 3 * n / 64;
  std::vector<float> x(n);
  for (float& v : x) v = std::exp(3.0f * r.normal());
  const std::size_t V = sparq::detail::prefilter_vectors(n, want);
  EXPECT_EQ(V, 8u);
  std::size_t m = 0;
  EXPECT_EQ(run_prefilter(x, want, V, &m), oracle(x, want));
  EXPECT_LT(m, 3 * want / 2) << "collected " << m << " for want = " << want;
  EXPECT_EQ(sparq::detail::prefilter_vectors(n, n / 4), 0u) << "no prefilter for large k";
}

TEST(top_k_prefilter, threshold_follows_the_maxima_in_a_narrow_band) {
  // Scores packed into a narrow band (SparQ's group scores near the k-th largest are often
  // this dense): every value here shares its top key bits, so a threshold on those bits
  // would pass all n. The threshold comes from the block maxima's own range instead.
  sparq_test::rng r(13);
  const std::size_t n = 63488, want = 3072;
  std::vector<float> x(n);
  for (float& v : x) v = r.uniform(1.0f, 1.2f);
  const std::size_t V = sparq::detail::prefilter_vectors(n, want);
  std::size_t m = 0;
  EXPECT_EQ(run_prefilter(x, want, V, &m), oracle(x, want));
  EXPECT_LT(m, 3 * want / 2) << "collected " << m << " for want = " << want;
  // The same band with many exact ties (more than keep_best ranks in its bucket buffer).
  for (float& v : x) v = 1.0f + 0.01f * static_cast<float>(r.index(20));
  EXPECT_EQ(run_prefilter(x, want, V, &m), oracle(x, want));
}

}  // namespace
