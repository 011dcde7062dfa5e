// The README's usage example, compiled and run as a test. The body of readme_example() between
// the BEGIN/END markers is the README's program; keep the two identical.
//
// Every key is the same vector, so the attention over the cache is uniform and dense attention
// is the mean of V (every V row is 1): the example's output must equal dense attention as
// written (k = 128 < S = 1000: the gathered rows and the reallocated mean are all 1), and the
// same program with k >= S must be exactly dense attention (alpha = 1, every position).

#include <gtest/gtest.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include <sparq/ref.hpp>

// ---- BEGIN README EXAMPLE (includes) ----
#include <sparq/sparq.hpp>
#include <vector>
// ---- END README EXAMPLE (includes) ----

namespace {

struct example_result {
  std::vector<float> out;
  std::vector<std::uint32_t> positions;
  std::vector<float> alpha;
};

/// Runs the README example; returns 0 once it has run, and hands its results to `result`.
int readme_example(example_result* result = nullptr) {
  // clang-format off
  // ---- BEGIN README EXAMPLE ----
// One KV head of a GQA model: 4 query heads share it; head_dim 128.
sparq::kv_cache<sparq::f16> cache(/*batch*/ 1, /*kv_heads*/ 1, /*capacity*/ 4096, /*head_dim*/ 128);
std::vector<float> k(128, 0.5f), v(128, 1.0f), q(4 * 128, 0.1f), out(4 * 128);
for (int t = 0; t < 1000; ++t) cache.append(/*seq*/ 0, k.data(), v.data());
sparq::config cfg;                       // r = 16, k = 128, l = 32, reallocation on
cfg.rank = 16; cfg.top_k = 128; cfg.local = 32;
std::vector<std::byte> scratch(sparq::step_workspace_bytes(/*group*/ 4, 4096, 128, cfg));
sparq::workspace ws{scratch.data(), scratch.size()};
sparq::step_result r = sparq::step(q.data(), /*group*/ 4, cache.head(0, 0), cfg, ws, out.data());
// out[h*128 + i] is head h's attention output; r.positions lists the k gathered positions.
  // ---- END README EXAMPLE ----
  // clang-format on
  if (result) {
    result->out = out;
    result->positions.assign(r.positions, r.positions + r.n_positions);
    result->alpha.assign(r.alpha, r.alpha + 4);
  }
  return 0;
}

/// The same program with top_k >= S, and the dense baseline on the same cache.
void example_with_top_k(std::size_t top_k, example_result& sparse, std::vector<float>& dense,
                        std::vector<double>& oracle) {
  sparq::kv_cache<sparq::f16> cache(1, 1, 4096, 128);
  std::vector<float> k(128, 0.5f), v(128, 1.0f), q(4 * 128, 0.1f), out(4 * 128);
  for (int t = 0; t < 1000; ++t) cache.append(0, k.data(), v.data());
  sparq::config cfg;
  cfg.rank = 16; cfg.top_k = top_k; cfg.local = 32;
  std::vector<std::byte> scratch(sparq::step_workspace_bytes(4, 4096, 128, cfg));
  sparq::workspace ws{scratch.data(), scratch.size()};
  sparq::step_result r = sparq::step(q.data(), 4, cache.head(0, 0), cfg, ws, out.data());
  sparse.out = out;
  sparse.positions.assign(r.positions, r.positions + r.n_positions);
  sparse.alpha.assign(r.alpha, r.alpha + 4);

  std::vector<std::byte> dscratch(sparq::dense_workspace_bytes(4, 128));
  dense.assign(4 * 128, 0.0f);
  sparq::dense_step(q.data(), 4, cache.keys(0, 0), cache.values(0, 0), 0.0f,
                    sparq::workspace{dscratch.data(), dscratch.size()}, dense.data());
  oracle = sparq::ref::dense(q.data(), 4, cache.keys(0, 0), cache.values(0, 0), 1.0 / std::sqrt(128.0));
}

TEST(readme_example, runs_and_gathers_k_positions) {
  example_result res;
  ASSERT_EQ(readme_example(&res), 0);
  ASSERT_EQ(res.out.size(), 4u * 128u);
  EXPECT_EQ(res.positions.size(), 128u);
  // The local window (the last 32 positions) is among them; positions are ascending.
  for (std::size_t j = 0; j < 32; ++j) EXPECT_EQ(res.positions[96 + j], 1000 - 32 + j);
  for (std::size_t j = 1; j < res.positions.size(); ++j) EXPECT_LT(res.positions[j - 1], res.positions[j]);
  // Uniform attention: every tied position weighs the same, so the lowest indices win the ties.
  for (std::size_t j = 0; j < 96; ++j) EXPECT_EQ(res.positions[j], j);
  for (float a : res.alpha) EXPECT_NEAR(a, 128.0 / 1000.0, 1e-5);
}

TEST(readme_example, output_equals_dense_attention) {
  example_result res, full;
  ASSERT_EQ(readme_example(&res), 0);
  std::vector<float> dense;
  std::vector<double> oracle;
  example_with_top_k(128, full, dense, oracle);
  for (std::size_t i = 0; i < res.out.size(); ++i) {
    EXPECT_NEAR(res.out[i], oracle[i], 1e-6) << i;  // every output is exactly the mean of V, 1
    EXPECT_NEAR(res.out[i], dense[i], 1e-6) << i;
    EXPECT_EQ(res.out[i], full.out[i]) << "the copy in example_with_top_k drifted from the README";
  }
}

TEST(readme_example, with_top_k_at_least_length_it_is_dense_attention) {
  for (std::size_t top_k : {1000, 1001, 4096}) {
    example_result res;
    std::vector<float> dense;
    std::vector<double> oracle;
    example_with_top_k(top_k, res, dense, oracle);
    ASSERT_EQ(res.positions.size(), 1000u);
    for (std::size_t s = 0; s < 1000; ++s) EXPECT_EQ(res.positions[s], s);
    for (float a : res.alpha) EXPECT_EQ(a, 1.0f);
    for (std::size_t i = 0; i < res.out.size(); ++i) {
      EXPECT_NEAR(res.out[i], oracle[i], 1e-6) << i;
      EXPECT_NEAR(res.out[i], dense[i], 1e-6) << i;
    }
  }
}

}  // namespace
