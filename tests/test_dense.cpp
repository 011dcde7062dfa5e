// Tests for the dense decode-attention baseline (dense.hpp) against sparq::ref::dense (float64)
// for every storage type (typed tests), head dims 1..256 (64 and 128 take the register-blocked
// path, the rest the runtime-d path), lengths around the SIMD widths and the online-softmax
// block (64) up to ~4000, GQA groups of 1/4/8 (and every group 1..12 through the blocked
// kernels, contiguous and gathered), padded strides and misaligned bases (padding is
// NaN), plus the log-sum-exp output, the scale convention and bit-identical repeats.
//
// Tolerance: the oracle reads the same stored (rounded) values and the kernel accumulates in
// fp32, so the relative L2 error is ~1e-6 for every dtype; 2e-5 leaves room for logit rounding
// amplified by peaked softmaxes.

#include "test_util.hpp"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <vector>

namespace {

using namespace sparq_test;
constexpr double out_tol = 2e-5;

template <class T>
class dense_typed : public ::testing::Test {};
TYPED_TEST_SUITE(dense_typed, storage_types, dtype_names);

TYPED_TEST(dense_typed, matches_the_float64_oracle) {
  using T = TypeParam;
  rng r(200);
  std::size_t case_no = 0;
  double worst = 0;
  const std::size_t dims[] = {1, 7, 15, 16, 17, 64, 72, 80, 96, 128, 256};
  const std::size_t lengths[] = {1, 7, 15, 16, 17, 63, 64, 65, 67, 129, 1000, 4003};
  const std::size_t groups[] = {1, 4, 8};
  for (std::size_t d : dims)
    for (std::size_t S : lengths) {
      if (S > 1000 && d != 64 && d != 128) continue;
      const std::size_t g = groups[case_no % 3];
      const layout lay = test_layouts()[(case_no / 3) % 3];
      ++case_no;
      const auto head = random_head<T>(r, S, d, lay);
      const auto q = random_queries(r, g, d, 0.3f + 0.3f * float(case_no % 4));
      const float scale = case_no % 2 ? 0.0f : 0.7f / std::sqrt(float(d));
      const double used = scale == 0.0f ? 1.0 / std::sqrt(double(float(d))) : double(scale);
      scratch_buffer buf(sparq::dense_workspace_bytes(g, d), case_no % 11);
      std::vector<float> out(g * d, std::numeric_limits<float>::quiet_NaN()), lse(g);
      sparq::dense_step<T>(q.data(), g, head.k(), head.v(), scale, buf.ws(), out.data(), lse.data());
      const auto want = sparq::ref::dense<T>(q.data(), g, head.k(), head.v(), used);
      const double err = rel_l2(out.data(), want);
      worst = std::max(worst, err);
      EXPECT_LT(err, out_tol) << type_name<T>() << " d=" << d << " S=" << S << " g=" << g << " pad=" << lay.row_pad;
      // lse against an independent float64 computation over every position.
      std::vector<std::uint32_t> all(S);
      for (std::size_t s = 0; s < S; ++s) all[s] = static_cast<std::uint32_t>(s);
      std::vector<double> out64, lse64;
      attend64(q.data(), g, head.k(), head.v(), all, used, out64, lse64);
      for (std::size_t h = 0; h < g; ++h)
        EXPECT_NEAR(lse[h], lse64[h], 1e-5 * std::max(1.0, std::fabs(lse64[h]))) << "d=" << d << " S=" << S;
      EXPECT_LT(rel_l2(out.data(), out64), out_tol);
    }
  std::printf("%s: worst dense relative L2 error %.2e over %zu cases\n", type_name<T>(), worst, case_no);
}

// The blocked kernels (attend_online_16 on AVX-512, attend_online_lanes on the other SIMD
// tiers; d = 64 and 128) take heads 4 at a time (AVX-512: up to 8 per pass over a block) and
// rows a block at a time, padding the last block. Every group size 1..12 (1, 2, 3 or 4 heads in
// the last pass; one, two or three passes) at lengths around the block sizes (4, 8, 16), for
// contiguous rows (dense_step) and gathered ones (attend_positions over every other position).
TYPED_TEST(dense_typed, every_group_size_matches_the_float64_oracle_in_the_blocked_kernels) {
  using T = TypeParam;
  rng r(207);
  std::size_t case_no = 0;
  for (std::size_t d : {64, 128})
    for (std::size_t g = 1; g <= 12; ++g)
      for (std::size_t S : {1, 3, 8, 9, 16, 31, 33, 70}) {
        const layout lay = test_layouts()[case_no++ % 3];
        const auto head = random_head<T>(r, S, d, lay);
        const auto q = random_queries(r, g, d, 1.0f);
        const float scale = 1.0f / std::sqrt(float(d));
        scratch_buffer buf(sparq::dense_workspace_bytes(g, d), case_no % 11);
        std::vector<float> out(g * d, std::numeric_limits<float>::quiet_NaN()), lse(g);
        sparq::dense_step<T>(q.data(), g, head.k(), head.v(), scale, buf.ws(), out.data(), lse.data());
        const auto want = sparq::ref::dense<T>(q.data(), g, head.k(), head.v(), scale);
        EXPECT_LT(rel_l2(out.data(), want), out_tol) << type_name<T>() << " d=" << d << " g=" << g << " S=" << S;

        std::vector<std::uint32_t> pos;
        for (std::size_t s = S % 2; s < S; s += 2) pos.push_back(static_cast<std::uint32_t>(s));
        if (pos.empty()) continue;
        std::vector<float> scratch(sparq::attend_scratch_floats(g, d)), got(g * d);
        sparq::attend_positions<T>(q.data(), g, head.k(), head.v(), pos.data(), pos.size(), scale,
                                   scratch.data(), got.data());
        std::vector<double> want_sub, want_lse;
        attend64(q.data(), g, head.k(), head.v(), pos, scale, want_sub, want_lse);
        EXPECT_LT(rel_l2(got.data(), want_sub), out_tol)
            << "gathered " << type_name<T>() << " d=" << d << " g=" << g << " S=" << S;
      }
}

TYPED_TEST(dense_typed, lse_is_optional_and_does_not_change_the_output) {
  using T = TypeParam;
  rng r(201);
  const std::size_t S = 300, d = 128, g = 4;
  const auto head = random_head<T>(r, S, d, layout{8, 0, 1});
  const auto q = random_queries(r, g, d, 1.0f);
  scratch_buffer buf(sparq::dense_workspace_bytes(g, d));
  std::vector<float> a(g * d), b(g * d), lse(g);
  sparq::dense_step<T>(q.data(), g, head.k(), head.v(), 0.0f, buf.ws(), a.data());
  sparq::dense_step<T>(q.data(), g, head.k(), head.v(), 0.0f, buf.ws(), b.data(), lse.data());
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * 4), 0);
}

TYPED_TEST(dense_typed, repeated_calls_are_bit_identical) {
  using T = TypeParam;
  rng r(202);
  for (std::size_t d : {64, 80, 128}) {
    const std::size_t S = 777, g = 8;
    const auto head = random_head<T>(r, S, d, layout{1, 0, 3});
    const auto q = random_queries(r, g, d, 1.0f);
    scratch_buffer b1(sparq::dense_workspace_bytes(g, d), 0), b2(sparq::dense_workspace_bytes(g, d) + 64, 29);
    std::vector<float> o1(g * d), o2(g * d), o3(g * d);
    sparq::dense_step<T>(q.data(), g, head.k(), head.v(), 0.0f, b1.ws(), o1.data());
    sparq::dense_step<T>(q.data(), g, head.k(), head.v(), 0.0f, b1.ws(), o2.data());
    sparq::dense_step<T>(q.data(), g, head.k(), head.v(), 0.0f, b2.ws(), o3.data());
    EXPECT_EQ(std::memcmp(o1.data(), o2.data(), o1.size() * 4), 0);
    EXPECT_EQ(std::memcmp(o1.data(), o3.data(), o1.size() * 4), 0);
    std::vector<float> o4(g * d);
    sparq::checked_dense_step<T>(q.data(), g, head.k(), head.v(), 0.0f, b2.ws(), o4.data());
    EXPECT_EQ(std::memcmp(o1.data(), o4.data(), o1.size() * 4), 0);
  }
}

TYPED_TEST(dense_typed, group_heads_are_independent) {
  // Head h of a group gets exactly the attention it would get alone (the group only shares
  // the reads of K and V).
  using T = TypeParam;
  rng r(203);
  const std::size_t S = 200, d = 64, g = 8;
  const auto head = random_head<T>(r, S, d);
  const auto q = random_queries(r, g, d, 1.0f);
  scratch_buffer buf(sparq::dense_workspace_bytes(g, d));
  std::vector<float> out(g * d);
  sparq::dense_step<T>(q.data(), g, head.k(), head.v(), 0.0f, buf.ws(), out.data());
  for (std::size_t h = 0; h < g; ++h) {
    std::vector<float> one(d);
    sparq::dense_step<T>(q.data() + h * d, 1, head.k(), head.v(), 0.0f, buf.ws(), one.data());
    const auto want = sparq::ref::dense<T>(q.data() + h * d, 1, head.k(), head.v(), 1.0 / std::sqrt(64.0));
    EXPECT_LT(rel_l2(one.data(), want), out_tol);
    EXPECT_LT(rel_l2(out.data() + h * d, want), out_tol);
  }
}

TYPED_TEST(dense_typed, extreme_logits_stay_finite) {
  // A very peaked softmax (logit gaps of hundreds) and a flat one (q = 0) both stay exact.
  using T = TypeParam;
  rng r(204);
  const std::size_t S = 150, d = 16, g = 2;
  const auto head = random_head<T>(r, S, d);
  std::vector<float> q = random_queries(r, g, d, 60.0f);
  for (std::size_t i = 0; i < d; ++i) q[d + i] = 0.0f;
  scratch_buffer buf(sparq::dense_workspace_bytes(g, d));
  std::vector<float> out(g * d), lse(g);
  sparq::dense_step<T>(q.data(), g, head.k(), head.v(), 0.0f, buf.ws(), out.data(), lse.data());
  const auto want = sparq::ref::dense<T>(q.data(), g, head.k(), head.v(), 0.25);
  // Logits up to ~1e3 here: their fp32 rounding (~1e-4 absolute) moves the weights by as much,
  // so this case gets a looser bound than the realistic sweeps.
  EXPECT_LT(rel_l2(out.data(), std::vector<double>(want.begin(), want.begin() + d)), 1e-3);
  // q = 0: uniform weights, the plain mean of V.
  std::vector<double> mean(d, 0.0);
  for (std::size_t s = 0; s < S; ++s)
    for (std::size_t i = 0; i < d; ++i) mean[i] += head.value(s, i) / double(S);
  EXPECT_LT(rel_l2(out.data() + d, mean), out_tol);
  EXPECT_NEAR(lse[1], std::log(double(S)), 1e-5);
  for (float x : out) EXPECT_TRUE(std::isfinite(x));
}

}  // namespace
