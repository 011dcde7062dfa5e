#include <gtest/gtest.h>
#include <sparq/policy.hpp>

#include <string>

TEST(decode_policy, k_follows_the_fraction_within_the_clamps) {
  sparq::decode_policy p;
  p.top_k_fraction = 1.0 / 16;
  p.top_k_min = 64;
  p.top_k_max = 4096;
  EXPECT_EQ(p.resolve(100).top_k, 64u);        // below the floor
  EXPECT_EQ(p.resolve(16384).top_k, 1024u);    // S/16
  EXPECT_EQ(p.resolve(1 << 20).top_k, 4096u);  // capped
  EXPECT_EQ(p.resolve(16384).local, 256u);     // k/4
  EXPECT_EQ(p.resolve(16384).rank, 16u);
}

TEST(decode_policy, fixed_k_when_the_fraction_is_zero) {
  sparq::decode_policy p;
  p.top_k_fraction = 0;
  p.top_k = 128;
  p.top_k_min = 1;
  EXPECT_EQ(p.resolve(5000).top_k, 128u);
  EXPECT_EQ(p.resolve(5000).local, 32u);
  EXPECT_EQ(p.resolve(3).top_k, 128u);  // k >= S: the step is exact dense attention
}

TEST(decode_policy, dense_below_the_threshold) {
  sparq::decode_policy p;
  p.dense_below = 2048;
  EXPECT_TRUE(p.use_dense(2047));
  EXPECT_FALSE(p.use_dense(2048));
  p.dense_below = 0;
  EXPECT_FALSE(p.use_dense(1));
}

TEST(decode_policy, resolved_configs_are_always_valid) {
  sparq::decode_policy p;
  p.top_k_min = 1;
  for (std::size_t S = 1; S < 5000; S += 37) EXPECT_NO_THROW(p.resolve(S).validate(128)) << S;
}

TEST(decode_policy, validate_names_the_bad_field) {
  auto message = [](const sparq::decode_policy& p) {
    try {
      p.validate(128);
    } catch (const sparq::error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  sparq::decode_policy p;
  p.top_k_fraction = 1.5;
  EXPECT_NE(message(p).find("top_k_fraction"), std::string::npos);
  p = {};
  p.top_k_min = 10;
  p.top_k_max = 5;
  EXPECT_NE(message(p).find("top_k_min"), std::string::npos);
  p = {};
  p.local_fraction = -0.1;
  EXPECT_NE(message(p).find("local_fraction"), std::string::npos);
  p = {};
  p.rank = 0;
  EXPECT_NE(message(p).find("rank"), std::string::npos);
}
