// Tests for sparq::kv_cache (kv_cache.hpp): what append stores (K, V rows rounded to T, the Kt
// column equal to the K row), the running mean of the stored values against a float64 mean
// after thousands of appends, block appends, several sequences and heads kept apart, reset,
// the views it hands out, and its errors (overflow, bad seq, bad head, no Kt).

#include "test_util.hpp"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <vector>

namespace {

using namespace sparq_test;

template <class T>
class cache_typed : public ::testing::Test {};
TYPED_TEST_SUITE(cache_typed, storage_types, dtype_names);

template <class T>
bool same_bits(T a, T b) {
  return std::memcmp(&a, &b, sizeof(T)) == 0;
}

TYPED_TEST(cache_typed, append_stores_rows_columns_and_rounded_values) {
  using T = TypeParam;
  const std::size_t B = 2, H = 3, cap = 70, d = 17;
  sparq::kv_cache<T> cache(B, H, cap, d);
  EXPECT_EQ(cache.batch(), B);
  EXPECT_EQ(cache.kv_heads(), H);
  EXPECT_EQ(cache.capacity(), cap);
  EXPECT_EQ(cache.head_dim(), d);
  EXPECT_TRUE(cache.has_kt());
  EXPECT_EQ(cache.bytes(), 3 * B * H * cap * d * sizeof(T) + B * H * d * sizeof(float));
  rng r(300);
  // Sequence 0 gets 67 tokens, sequence 1 gets 5; inputs remembered per (seq, t).
  std::vector<std::vector<float>> ks[2], vs[2];
  for (std::size_t seq = 0; seq < B; ++seq) {
    const std::size_t n = seq == 0 ? 67 : 5;
    for (std::size_t t = 0; t < n; ++t) {
      ks[seq].push_back(random_rows(r, H, d));
      vs[seq].push_back(random_rows(r, H, d));
      cache.append(seq, ks[seq].back().data(), vs[seq].back().data());
    }
  }
  EXPECT_EQ(cache.length(0), 67u);
  EXPECT_EQ(cache.length(1), 5u);
  for (std::size_t seq = 0; seq < B; ++seq)
    for (std::size_t h = 0; h < H; ++h) {
      const auto kv = cache.head(seq, h);
      const std::size_t S = cache.length(seq);
      EXPECT_EQ(kv.length(), S);
      EXPECT_EQ(kv.dim(), d);
      EXPECT_EQ(kv.k.row_stride, d);
      EXPECT_EQ(kv.v.row_stride, d);
      EXPECT_EQ(kv.kt.length, S);
      EXPECT_EQ(kv.kt.dim, d);
      EXPECT_EQ(kv.kt.dim_stride, cap);
      EXPECT_EQ(kv.k.data, cache.keys(seq, h).data);
      EXPECT_EQ(kv.v.data, cache.values(seq, h).data);
      EXPECT_EQ(kv.kt.data, cache.keys_t(seq, h).data);
      EXPECT_EQ(kv.v_mean, cache.v_mean(seq, h));
      std::vector<double> mean(d, 0.0);
      for (std::size_t s = 0; s < S; ++s)
        for (std::size_t i = 0; i < d; ++i) {
          const T kexp = sparq::from_float<T>(ks[seq][s][h * d + i]);
          const T vexp = sparq::from_float<T>(vs[seq][s][h * d + i]);
          ASSERT_TRUE(same_bits(kv.k.row(s)[i], kexp)) << "seq=" << seq << " h=" << h << " s=" << s;
          ASSERT_TRUE(same_bits(kv.v.row(s)[i], vexp)) << "seq=" << seq << " h=" << h << " s=" << s;
          ASSERT_TRUE(same_bits(kv.kt.dim_row(i)[s], kexp)) << "Kt column " << s << " dim " << i;
          mean[i] += sparq::to_float(vexp);
        }
      for (std::size_t i = 0; i < d; ++i)
        EXPECT_NEAR(kv.v_mean[i], mean[i] / double(S), 1e-5 * (1 + std::fabs(mean[i] / double(S))));
    }
}

TYPED_TEST(cache_typed, running_mean_equals_the_true_mean_of_stored_values_after_5000_appends) {
  using T = TypeParam;
  const std::size_t H = 2, d = 64, n = 5000;
  sparq::kv_cache<T> cache(1, H, n, d);
  rng r(301);
  std::vector<double> sum(H * d, 0.0), sumsq(H * d, 0.0);
  std::vector<float> k(H * d), v(H * d);
  for (std::size_t t = 0; t < n; ++t) {
    for (std::size_t j = 0; j < H * d; ++j) {
      k[j] = r.normal();
      // A nonzero mean per channel (-3..3) plus noise, and a slow drift over time: the running
      // mean must follow the stored values, not just their first few.
      v[j] = float(j % 7) - 3.0f + r.normal() + 1e-3f * float(t);
      const double sv = stored<T>(v[j]);
      sum[j] += sv;
      sumsq[j] += sv * sv;
    }
    cache.append(0, k.data(), v.data());
  }
  double worst = 0;
  for (std::size_t h = 0; h < H; ++h)
    for (std::size_t i = 0; i < d; ++i) {
      const std::size_t j = h * d + i;
      const double mean = sum[j] / double(n);
      const double rms = std::sqrt(sumsq[j] / double(n));
      // An fp32 running mean rounds by ~u*|mean| per update and earlier errors decay only as
      // t/n, so over n = 5000 updates the error is a random walk of ~sqrt(n)*u*|mean| (measured
      // ~2e-6 of rms); 1e-5*rms bounds that. A mean that missed values, or used the unrounded
      // inputs instead of the stored ones (bf16 rounding is ~4e-3), would be off by far more.
      const double err = std::fabs(cache.v_mean(0, h)[i] - mean);
      worst = std::max(worst, err / rms);
      EXPECT_LT(err, 1e-5 * rms) << type_name<T>() << " h=" << h << " i=" << i;
    }
  std::printf("%s: worst running-mean error %.2e of rms after %zu appends\n", type_name<T>(), worst, n);
}

TYPED_TEST(cache_typed, block_append_equals_token_appends) {
  using T = TypeParam;
  const std::size_t H = 2, d = 16, cap = 300;
  sparq::kv_cache<T> one(1, H, cap, d), block(1, H, cap, d);
  rng r(302);
  const auto K = random_rows(r, 250 * H, d), V = random_rows(r, 250 * H, d);
  for (std::size_t t = 0; t < 250; ++t) one.append(0, K.data() + t * H * d, V.data() + t * H * d);
  // Blocks of uneven sizes, including an empty one.
  std::size_t t = 0;
  for (std::size_t n : {0, 1, 17, 64, 100, 68}) {
    block.append(0, n, K.data() + t * H * d, V.data() + t * H * d);
    t += n;
  }
  ASSERT_EQ(t, 250u);
  ASSERT_EQ(block.length(0), 250u);
  for (std::size_t h = 0; h < H; ++h) {
    const auto a = one.head(0, h), b = block.head(0, h);
    EXPECT_EQ(std::memcmp(a.k.data, b.k.data, 250 * d * sizeof(T)), 0);
    EXPECT_EQ(std::memcmp(a.v.data, b.v.data, 250 * d * sizeof(T)), 0);
    for (std::size_t i = 0; i < d; ++i) EXPECT_EQ(std::memcmp(a.kt.dim_row(i), b.kt.dim_row(i), 250 * sizeof(T)), 0);
    EXPECT_EQ(std::memcmp(a.v_mean, b.v_mean, d * sizeof(float)), 0);
  }
}

TYPED_TEST(cache_typed, a_step_on_the_cache_matches_the_oracle) {
  using T = TypeParam;
  const std::size_t H = 2, d = 64, g = 4, S = 900;
  sparq::kv_cache<T> cache(2, H, 1024, d);
  rng r(303);
  const auto K = random_rows(r, S * H, d), V = random_rows(r, S * H, d);
  cache.append(1, S, K.data(), V.data());
  const auto q = random_queries(r, g, d, 1.0f);
  sparq::config cfg;
  cfg.rank = 16;
  cfg.top_k = 64;
  cfg.local = 16;
  std::vector<unsigned char> ws(sparq::step_workspace_bytes(g, cache.capacity(), d, cfg));
  for (std::size_t h = 0; h < H; ++h) {
    std::vector<float> out(g * d);
    const auto res = sparq::checked_step<T>(q.data(), g, cache.head(1, h), cfg, {ws.data(), ws.size()}, out.data());
    const auto given = sparq_given<T>(q.data(), g, cache.head(1, h), cfg, to_vec(res.components, res.n_components),
                                      to_vec(res.positions, res.n_positions));
    // The reallocation reads the cache's running v_mean; the oracle the exact mean: still ~1e-6.
    EXPECT_LT(rel_l2(out.data(), given.out), 2e-5);
    EXPECT_TRUE(valid_top_k(std::vector<double>(given.sel.begin(), given.sel.end() - 16),
                            to_vec(res.positions, 48), 48, 1e-4));
  }
}

TYPED_TEST(cache_typed, sequences_and_heads_are_kept_apart_and_reset_forgets_one) {
  using T = TypeParam;
  const std::size_t B = 3, H = 2, d = 8, cap = 20;
  sparq::kv_cache<T> cache(B, H, cap, d);
  std::vector<float> k(H * d), v(H * d);
  for (std::size_t seq = 0; seq < B; ++seq)
    for (std::size_t t = 0; t < 4 + seq; ++t) {
      for (std::size_t j = 0; j < H * d; ++j) {
        k[j] = float(100 * seq + 10 * (j / d) + t);  // encodes (seq, head, t), exact in bf16
        v[j] = float(seq + 1) * float(1 + j / d);
      }
      cache.append(seq, k.data(), v.data());
    }
  for (std::size_t seq = 0; seq < B; ++seq) {
    EXPECT_EQ(cache.length(seq), 4 + seq);
    for (std::size_t h = 0; h < H; ++h) {
      const auto kv = cache.head(seq, h);
      for (std::size_t s = 0; s < kv.length(); ++s)
        EXPECT_EQ(sparq::to_float(kv.k.row(s)[3]), float(100 * seq + 10 * h + s));
      for (std::size_t i = 0; i < d; ++i) EXPECT_EQ(kv.v_mean[i], float(seq + 1) * float(1 + h));
    }
  }
  cache.reset(1);
  EXPECT_EQ(cache.length(1), 0u);
  EXPECT_EQ(cache.length(0), 4u);
  EXPECT_EQ(cache.length(2), 6u);
  for (std::size_t h = 0; h < H; ++h)
    for (std::size_t i = 0; i < d; ++i) {
      EXPECT_EQ(cache.v_mean(1, h)[i], 0.0f);
      EXPECT_EQ(cache.v_mean(0, h)[i], float(1 + h));
    }
  // After a reset the mean restarts from the new values only.
  for (std::size_t j = 0; j < H * d; ++j) v[j] = 5.0f;
  cache.append(1, k.data(), v.data());
  EXPECT_EQ(cache.length(1), 1u);
  EXPECT_EQ(cache.v_mean(1, 0)[0], 5.0f);
  EXPECT_EQ(sparq::to_float(cache.keys(1, 1).row(0)[0]), k[d]);
}

TYPED_TEST(cache_typed, fills_to_capacity_and_then_refuses) {
  using T = TypeParam;
  const std::size_t H = 2, d = 4, cap = 5;
  sparq::kv_cache<T> cache(2, H, cap, d);
  std::vector<float> k(cap * H * d, 1.0f), v(cap * H * d, 2.0f);
  cache.append(0, 3, k.data(), v.data());
  cache.append(0, 2, k.data(), v.data());
  EXPECT_EQ(cache.length(0), cap);
  EXPECT_SPARQ_ERROR(cache.append(0, k.data(), v.data()), "capacity");
  EXPECT_SPARQ_ERROR(cache.append(0, k.data(), v.data()), "sequence 0");
  EXPECT_EQ(cache.length(0), cap);
  // A block that would overflow is refused whole, without a partial write.
  cache.append(1, 4, k.data(), v.data());
  EXPECT_SPARQ_ERROR(cache.append(1, 2, k.data(), v.data()), "overflow");
  EXPECT_EQ(cache.length(1), 4u);
  EXPECT_EQ(cache.v_mean(1, 0)[0], 2.0f);
  cache.append(1, 1, k.data(), v.data());
  EXPECT_EQ(cache.length(1), cap);
}

TEST(kv_cache, bad_sequence_and_head_are_named) {
  sparq::kv_cache<float> cache(2, 3, 10, 4);
  std::vector<float> k(12), v(12);
  EXPECT_SPARQ_ERROR(cache.append(2, k.data(), v.data()), "seq = 2");
  EXPECT_SPARQ_ERROR(cache.append(7, 1, k.data(), v.data()), "seq");
  EXPECT_SPARQ_ERROR(cache.reset(2), "seq");
  EXPECT_SPARQ_ERROR(cache.head(2, 0), "seq");
  EXPECT_SPARQ_ERROR(cache.head(0, 3), "head = 3");
  EXPECT_SPARQ_ERROR(cache.keys(0, 3), "head");
  EXPECT_SPARQ_ERROR(cache.values(1, 5), "head");
  EXPECT_SPARQ_ERROR(cache.keys_t(0, 3), "head");
  EXPECT_SPARQ_ERROR(cache.v_mean(0, 3), "head");
  EXPECT_SPARQ_ERROR(cache.append(0, nullptr, v.data()), "null");
  EXPECT_SPARQ_ERROR(cache.append(0, k.data(), nullptr), "null");
  // length() is part of the cache's checked API too (error.hpp: the KV cache throws
  // sparq::error naming the argument).
  EXPECT_SPARQ_ERROR(cache.length(2), "seq");
}

TEST(kv_cache, without_kt_has_no_keys_t_and_is_smaller) {
  sparq::kv_cache<sparq::f16> with(1, 2, 32, 8), without(1, 2, 32, 8, /*keep_kt*/ false);
  EXPECT_FALSE(without.has_kt());
  EXPECT_EQ(without.bytes() + 2 * 32 * 8 * sizeof(sparq::f16), with.bytes());
  std::vector<float> k(16, 1.0f), v(16, 3.0f);
  without.append(0, k.data(), v.data());
  EXPECT_EQ(without.length(0), 1u);
  EXPECT_EQ(sparq::to_float(without.keys(0, 1).row(0)[7]), 1.0f);
  EXPECT_EQ(without.v_mean(0, 1)[0], 3.0f);
  EXPECT_SPARQ_ERROR(without.keys_t(0, 0), "keep_kt");
  EXPECT_SPARQ_ERROR(without.head(0, 0), "Kt");
}

TEST(kv_cache, zero_sizes_are_named) {
  EXPECT_SPARQ_ERROR(sparq::kv_cache<float>(0, 1, 1, 1), "batch");
  EXPECT_SPARQ_ERROR(sparq::kv_cache<float>(1, 0, 1, 1), "kv_heads");
  EXPECT_SPARQ_ERROR(sparq::kv_cache<float>(1, 1, 0, 1), "capacity");
  EXPECT_SPARQ_ERROR(sparq::kv_cache<float>(1, 1, 1, 0), "head_dim");
}

}  // namespace
