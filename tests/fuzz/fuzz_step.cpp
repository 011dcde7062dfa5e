// libFuzzer target: checked_step and dense_step over fuzzed shapes, strides, settings and
// values (NaN, +-inf, denormals, huge), under ASan/UBSan. Checks:
//   - never crashes, never reads out of bounds (the sanitizers and guard-padded buffers);
//   - selections are in range, ascending, of size min(k, S), and hold the local window;
//   - with finite, moderate inputs: 0 <= alpha <= 1 and the output equals the float64 oracle
//     (sparq::ref) unless the oracle itself has a near-tie at the selection boundary;
//   - the same cache as paged views (scrambled pages, P = 1..16) gives the same bits.
#include <fuzzer/FuzzedDataProvider.h>
#include <sparq/ref.hpp>
#include <sparq/sparq.hpp>

#include <algorithm>
#include <cstring>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <vector>

namespace {

#define FUZZ_CHECK(cond)                                                         \
  do {                                                                           \
    if (!(cond)) {                                                               \
      std::fprintf(stderr, "fuzz_step: check failed: %s (line %d)\n", #cond, __LINE__); \
      std::abort();                                                              \
    }                                                                            \
  } while (0)

float pick_value(FuzzedDataProvider& fdp, bool wild) {
  if (!wild) return fdp.ConsumeFloatingPointInRange<float>(-4.0f, 4.0f);
  switch (fdp.ConsumeIntegralInRange<int>(0, 7)) {
    case 0: return std::numeric_limits<float>::quiet_NaN();
    case 1: return std::numeric_limits<float>::infinity();
    case 2: return -std::numeric_limits<float>::infinity();
    case 3: return std::numeric_limits<float>::denorm_min() * fdp.ConsumeIntegralInRange<int>(1, 1000);
    case 4: return fdp.ConsumeBool() ? 3e38f : -3e38f;
    default: return fdp.ConsumeFloatingPointInRange<float>(-4.0f, 4.0f);
  }
}

// Does a differing selection only differ where the oracle's scores are within rounding?
bool near_tie(const std::vector<double>& score, const std::vector<std::uint32_t>& a,
              const std::vector<std::uint32_t>& b) {
  double mx = 0;
  for (double s : score) mx = std::max(mx, std::fabs(s));
  const double tol = 1e-4 * mx + 1e-30;
  double lo_in = std::numeric_limits<double>::infinity(), hi_out = -lo_in;
  std::vector<bool> in_a(score.size(), false);
  for (auto i : a) in_a[i] = true;
  for (auto i : b)
    if (!in_a[i]) hi_out = std::max(hi_out, score[i]);
  for (auto i : a)
    if (std::find(b.begin(), b.end(), i) == b.end()) lo_in = std::min(lo_in, score[i]);
  return std::fabs(lo_in - hi_out) <= tol;
}

template <class T>
void run(FuzzedDataProvider& fdp) {
  const std::size_t d = fdp.ConsumeIntegralInRange<std::size_t>(1, 80);
  const std::size_t S = fdp.ConsumeIntegralInRange<std::size_t>(1, 200);
  const std::size_t g = fdp.ConsumeIntegralInRange<std::size_t>(1, 8);
  const std::size_t pad = fdp.ConsumeIntegralInRange<std::size_t>(0, 5);
  sparq::config cfg;
  cfg.rank = fdp.ConsumeIntegralInRange<std::size_t>(1, d);
  cfg.top_k = fdp.ConsumeIntegralInRange<std::size_t>(1, S + 4);
  cfg.local = fdp.ConsumeIntegralInRange<std::size_t>(0, cfg.top_k);
  cfg.reallocate = fdp.ConsumeBool();
  const bool wild = fdp.ConsumeBool();

  // K/V rows with padded stride, Kt with a padded dimension stride; v_mean computed here.
  const std::size_t rs = d + pad, ds = S + pad;
  std::vector<T> k(S * rs), v(S * rs), kt(d * ds);
  std::vector<float> q(g * d), v_mean(d, 0.0f);
  for (std::size_t s = 0; s < S; ++s)
    for (std::size_t i = 0; i < d; ++i) {
      k[s * rs + i] = sparq::from_float<T>(pick_value(fdp, wild));
      v[s * rs + i] = sparq::from_float<T>(pick_value(fdp, wild));
      kt[i * ds + s] = k[s * rs + i];
      v_mean[i] += sparq::to_float(v[s * rs + i]) / float(S);
    }
  for (auto& x : q) x = pick_value(fdp, wild) * 2.0f;

  sparq::kv_head_view<const T> kv{{k.data(), S, d, rs}, {kt.data(), d, S, ds}, {v.data(), S, d, rs},
                                  v_mean.data()};
  std::vector<std::byte> ws(sparq::step_workspace_bytes(g, S, d, cfg));
  std::vector<float> out(g * d);
  const auto res = sparq::checked_step(q.data(), g, kv, cfg, {ws.data(), ws.size()}, out.data());

  const std::size_t n = std::min(cfg.top_k, S);
  FUZZ_CHECK(res.n_positions == n);
  for (std::size_t j = 0; j < n; ++j) {
    FUZZ_CHECK(res.positions[j] < S);
    if (j) FUZZ_CHECK(res.positions[j] > res.positions[j - 1]);
  }
  for (std::size_t s = S - std::min(cfg.local, S); s < S; ++s)
    FUZZ_CHECK(std::binary_search(res.positions, res.positions + n, std::uint32_t(s)));

  std::vector<std::byte> wsd(sparq::dense_workspace_bytes(g, d));
  std::vector<float> dense(g * d);
  sparq::checked_dense_step(q.data(), g, kv.k, kv.v, 0.0f, {wsd.data(), wsd.size()}, dense.data());

  // The same cache paged (P = 2^bits tokens per page, pages in a scrambled pool order) must
  // give the same bits for the step and for dense, whatever the values.
  {
    const unsigned bits = fdp.ConsumeIntegralInRange<unsigned>(0, 4);
    const std::size_t P = std::size_t{1} << bits, np = (S + P - 1) / P;
    std::vector<std::int32_t> pages(np);
    // A permutation of the pool (reversed, then rotated): no two pages share a pool slot.
    for (std::size_t p = 0; p < np; ++p)
      pages[p] = static_cast<std::int32_t>((np - 1 - p + np / 3) % np);
    std::vector<T> pk(np * P * d), pv(np * P * d), pkt(np * d * P);
    for (std::size_t s = 0; s < S; ++s) {
      const std::size_t pg = static_cast<std::size_t>(pages[s / P]), slot = s % P;
      for (std::size_t i = 0; i < d; ++i) {
        pk[(pg * P + slot) * d + i] = k[s * rs + i];
        pv[(pg * P + slot) * d + i] = v[s * rs + i];
        pkt[(pg * d + i) * P + slot] = k[s * rs + i];
      }
    }
    const sparq::paged_kv_head_view<const T> pkv{{pk.data(), pages.data(), S, d, bits, P * d, d},
                                                 {pkt.data(), pages.data(), d, S, bits, d * P, P},
                                                 {pv.data(), pages.data(), S, d, bits, P * d, d},
                                                 v_mean.data()};
    std::vector<float> pout(g * d), pdense(g * d);
    std::vector<std::byte> ws2(ws.size());
    const auto pres =
        sparq::checked_step(q.data(), g, pkv, cfg, {ws2.data(), ws2.size()}, pout.data());
    FUZZ_CHECK(pres.n_positions == n);
    FUZZ_CHECK(std::equal(res.positions, res.positions + n, pres.positions));
    FUZZ_CHECK(std::memcmp(out.data(), pout.data(), out.size() * sizeof(float)) == 0);
    sparq::checked_dense_step(q.data(), g, pkv.k, pkv.v, 0.0f, {wsd.data(), wsd.size()},
                              pdense.data());
    FUZZ_CHECK(std::memcmp(dense.data(), pdense.data(), dense.size() * sizeof(float)) == 0);
  }
  if (wild) return;  // NaN/inf/huge inputs: in-bounds and terminating is the contract

  for (std::size_t h = 0; h < g; ++h) FUZZ_CHECK(res.alpha[h] >= 0.0f && res.alpha[h] <= 1.0f);
  const auto ref = sparq::ref::sparq(q.data(), g, kv, cfg);
  std::vector<std::uint32_t> mine(res.positions, res.positions + n);
  if (res.components) {
    std::vector<std::uint32_t> i1(res.components, res.components + res.n_components);
    if (i1 != ref.components) {
      std::vector<double> a(d, 0.0);
      for (std::size_t h = 0; h < g; ++h)
        for (std::size_t i = 0; i < d; ++i) a[i] += std::fabs(double(q[h * d + i]));
      FUZZ_CHECK(near_tie(a, i1, ref.components));
      return;
    }
  }
  if (mine != ref.positions) {
    std::vector<double> sel(ref.sel.begin(), ref.sel.end());
    FUZZ_CHECK(!sel.empty() && near_tie(sel, mine, ref.positions));
    return;
  }
  double err = 0, norm = 0;
  for (std::size_t i = 0; i < g * d; ++i) {
    err += (out[i] - ref.out[i]) * (out[i] - ref.out[i]);
    norm += ref.out[i] * ref.out[i];
  }
  FUZZ_CHECK(std::sqrt(err) <= 1e-4 * std::sqrt(norm) + 1e-5);
  const auto rd = sparq::ref::dense(q.data(), g, kv.k, kv.v, cfg.scale_for(d));
  err = norm = 0;
  for (std::size_t i = 0; i < g * d; ++i) {
    err += (dense[i] - rd[i]) * (dense[i] - rd[i]);
    norm += rd[i] * rd[i];
  }
  FUZZ_CHECK(std::sqrt(err) <= 1e-4 * std::sqrt(norm) + 1e-5);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider fdp(data, size);
  switch (fdp.ConsumeIntegralInRange<int>(0, 2)) {
    case 0: run<float>(fdp); break;
    case 1: run<sparq::f16>(fdp); break;
    default: run<sparq::bf16>(fdp); break;
  }
  return 0;
}
