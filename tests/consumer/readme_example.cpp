// The README's usage example, built by the consumer projects against the installed package
// (find_package) and the source tree (add_subdirectory).
#include <sparq/sparq.hpp>

#include <cmath>
#include <cstdio>
#include <vector>

int main() {
  // One KV head of a GQA model: 4 query heads share it; head_dim 128.
  sparq::kv_cache<sparq::f16> cache(/*batch*/ 1, /*kv_heads*/ 1, /*capacity*/ 4096, /*head_dim*/ 128);
  std::vector<float> k(128, 0.5f), v(128, 1.0f), q(4 * 128, 0.1f), out(4 * 128);
  for (int t = 0; t < 1000; ++t) cache.append(/*seq*/ 0, k.data(), v.data());
  sparq::config cfg;  // r = 16, k = 128, l = 32, reallocation on
  cfg.rank = 16; cfg.top_k = 128; cfg.local = 32;
  std::vector<std::byte> scratch(sparq::step_workspace_bytes(/*group*/ 4, 4096, 128, cfg));
  sparq::workspace ws{scratch.data(), scratch.size()};
  sparq::step_result r = sparq::step(q.data(), /*group*/ 4, cache.head(0, 0), cfg, ws, out.data());
  // out[h*128 + i] is head h's attention output; r.positions lists the k gathered positions.

  // Every value row is 1, so every output element must be 1 and k positions are chosen.
  for (float x : out)
    if (std::fabs(x - 1.0f) > 1e-6f) { std::printf("FAIL: output %g != 1\n", x); return 1; }
  if (r.n_positions != 128) { std::printf("FAIL: %zu positions\n", r.n_positions); return 1; }
  std::printf("consumer OK: sparq %s, %zu positions, alpha[0] = %.4f\n", SPARQ_VERSION_STRING,
              r.n_positions, r.alpha[0]);
  return 0;
}
