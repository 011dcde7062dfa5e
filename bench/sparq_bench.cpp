// sparq-bench: SparQ vs dense decode attention on this machine, against an in-process
// STREAM-like read roof.
//
// Model shape: d = 128, 32 query heads / 8 KV heads (GQA, g = 4), fp16 KV (--dtype: f32 or
// bf16 instead), batch 1.
// S in {4096, 16384, 65536}; r = 16, k = S/16, l = k/4. Both methods run through
// sparq::batch_step (include/sparq/parallel.hpp) on --threads threads.
//
// Method: for each case the KV cache (K, Kt, V) is cloned into enough copies that together
// they exceed twice the last-level cache, and successive timed steps rotate over the copies,
// so every step streams from DRAM. Times are medians over repeated steps. Bytes are what the
// kernels report through sparq::traffic_counter in one extra untimed run (single-threaded,
// same arithmetic), not a formula. The roof is a multi-threaded sum of a float array of
// max(1 GiB, 2 x LLC) on the same threads in this process (sparq_bench::read_floats: 4 KiB at
// a time, one line touched 32 KiB ahead per 4 KiB), sampled before, between the dense
// and SparQ timings of, and after every round of every case (the bandwidth a shared host
// gives drifts; --quick's one round still gets three samples); each case's fractions use
// the median of its own samples, and a case whose samples span more than 20% of that median,
// or whose dense step read faster than that median, is flagged "unsteady" (JSON: unsteady,
// with case_roof_min_gbps and case_roof_max_gbps). The pattern reads replay each method's
// reads as a plain loop, in the same rounds: sparq_bench::read_pattern each KV head's SparQ
// reads (its r Kt rows, its K/V rows), read_dense_pattern the dense step's K and V rows in
// its order. They show what each access pattern costs on this machine without the kernels'
// arithmetic: yardsticks, not bounds (a kernel that overlaps its loads better can beat a
// plain loop).
//
// Usage: sparq-bench [--quick] [--json FILE] [--threads N] [--dtype f16|f32|bf16]
// (N: 1..1024; FILE is opened before anything is measured; bad values exit 2.)

#include "bench_harness.hpp"

#include <sparq/parallel.hpp>
#include <sparq/sparq.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <time.h>
#include <unistd.h>
#include <vector>

namespace {

using namespace sparq_bench;

struct case_result {
  std::size_t S = 0, k = 0, l = 0;
  double dense_us = 0, sparq_us = 0;
  double dense_cpu_us = 0, sparq_cpu_us = 0;  // critical-path thread CPU time per step
  std::size_t dense_bytes = 0, sparq_bytes = 0;
  double max_rel_diff = 0;
  double roof = 0, roof_cpu = 0;  // GB/s, sampled next to this case's timings (median)
  double roof_min = 0, roof_max = 0;  // GB/s, the lowest and highest of those samples
  double pattern_us = 0;          // plain read of SparQ's bytes in its order (median)
  double dense_pattern_us = 0;    // plain read of dense's bytes in its order (median)

  // GB/s (1e9 B/s) of the median steps and of the pattern read.
  double dense_gbps() const { return dense_bytes / dense_us * 1e-3; }
  double sparq_gbps() const { return sparq_bytes / sparq_us * 1e-3; }
  double pattern_gbps() const { return sparq_bytes / pattern_us * 1e-3; }
  double dense_pattern_gbps() const { return dense_bytes / dense_pattern_us * 1e-3; }

  /// The two reasons a case is flagged unsteady: its roof samples span more than this
  /// fraction of their median, or its dense step read faster than that median.
  static constexpr double roof_spread_warn = 0.2;
  double roof_spread() const { return (roof_max - roof_min) / roof; }
  bool roof_moved() const { return roof_spread() > roof_spread_warn; }
  bool dense_above_roof() const { return dense_gbps() > roof; }
  bool unsteady() const { return roof_moved() || dense_above_roof(); }
};

constexpr std::size_t d = 128, q_heads = 32, kv_heads = 8, g = q_heads / kv_heads, rank = 16;

template <class T>
case_result run_case(std::size_t S, sparq::thread_pool& pool, std::size_t nth, bool quick,
                     std::size_t rotate_bytes, roof_meter& meter) {
  case_result res;
  res.S = S;
  res.k = S / 16;
  res.l = res.k / 4;
  sparq::config cfg;
  cfg.rank = rank;
  cfg.top_k = res.k;
  cfg.local = res.l;

  // One cache filled through the public append path, then cloned.
  std::mt19937 rng(42);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  using cache_t = sparq::kv_cache<T>;
  auto first = std::make_unique<cache_t>(1, kv_heads, S, d);
  {
    std::vector<float> kk(kv_heads * d), vv(kv_heads * d);
    for (std::size_t t = 0; t < S; ++t) {
      for (auto& x : kk) x = nd(rng);
      for (auto& x : vv) x = nd(rng);
      first->append(0, kk.data(), vv.data());
    }
  }
  const std::size_t per_copy = first->bytes();
  const std::vector<std::unique_ptr<cache_t>> caches =
      clones(std::move(first), per_copy, rotate_bytes);

  // Queries aimed at a few random cached keys (attention is peaked, as in trained models),
  // plus noise. This only shapes the attention pattern; timing does not depend on it.
  std::vector<float> q(q_heads * d);
  {
    std::uniform_int_distribution<std::size_t> pick(0, S - 1);
    for (std::size_t h = 0; h < q_heads; ++h) {
      float* qh = q.data() + h * d;
      for (std::size_t i = 0; i < d; ++i) qh[i] = 0.3f * nd(rng);
      const auto keys = caches[0]->keys(0, h / g);
      for (int t = 0; t < 4; ++t) {
        const T* kr = keys.row(pick(rng));
        for (std::size_t i = 0; i < d; ++i) qh[i] += 0.5f * sparq::to_float(kr[i]);
      }
    }
  }
  std::vector<float> out_s(q.size()), out_d(q.size());

  sparq::batch_step<T> sp(1, kv_heads, g, S, d, cfg, nth, sparq::batch_mode::sparq);
  sparq::batch_step<T> de(1, kv_heads, g, S, d, cfg, nth, sparq::batch_mode::dense);
  std::vector<unsigned char> ws_s(sp.workspace_bytes()), ws_d(de.workspace_bytes());
  const sparq::workspace wss{ws_s.data(), ws_s.size()}, wsd{ws_d.data(), ws_d.size()};

  // Bytes: one untimed single-threaded run each, counted.
  auto count = [&](sparq::batch_step<T>& st, const sparq::workspace& ws, float* out) {
    sparq::traffic_counter tc;
    st.prepare(q.data(), out, *caches[0], ws, 1);
    for (std::size_t p = 0; p < st.phases(); ++p) st.run_phase(p, 0, 1, tc);
    return tc.total_bytes();
  };
  res.sparq_bytes = count(sp, wss, out_s.data());
  res.dense_bytes = count(de, wsd, out_d.data());
  double num = 0, den = 0;
  for (std::size_t i = 0; i < q.size(); ++i) {
    num += (out_s[i] - out_d[i]) * (out_s[i] - out_d[i]);
    den += out_d[i] * out_d[i];
  }
  res.max_rel_diff = std::sqrt(num / den);

  // What each KV head's SparQ step reads (its r Kt rows and its positions), from sparq::step
  // on the same queries: the access pattern the pattern read replays.
  std::vector<head_pattern> pattern(kv_heads);
  {
    std::vector<unsigned char> ws(sparq::step_workspace_bytes(g, S, d, cfg));
    std::vector<float> o(g * d);
    for (std::size_t h = 0; h < kv_heads; ++h) {
      const sparq::step_result sr = sparq::step(q.data() + h * g * d, g, caches[0]->head(0, h),
                                                cfg, sparq::workspace{ws.data(), ws.size()},
                                                o.data());
      pattern[h].dims.assign(sr.components, sr.components + sr.n_components);
      pattern[h].positions.assign(sr.positions, sr.positions + sr.n_positions);
    }
  }

  // Timed: rotate over the copies; median of the per-step times.
  const double budget = quick ? 0.25 : 1.5;
  auto time_it = [&](sparq::batch_step<T>& st, const sparq::workspace& ws, float* out,
                     double& cpu_us) {
    return time_rotating(st, pool, nth, q.data(), out, ws, caches, budget, cpu_us);
  };
  // Interleave the two methods over a few rounds so drift hits both alike.
  // The roof is sampled before, in the middle of and after each round: the bandwidth a
  // shared host gives drifts by tens of percent over minutes, so fractions use the roof of
  // their own case, and the samples around each method's timing show whether it moved.
  std::vector<double> td, ts, tp, tq, cd, cs, rw, rc;
  auto sample_roof = [&] {
    double c = 0;
    rw.push_back(meter.measure(quick ? 1 : 3, c));
    rc.push_back(c);
  };
  // The pattern reads must read what the steps read.
  auto check_bytes = [](const char* what, std::size_t got, std::size_t want) {
    if (got == want) return;
    std::fprintf(stderr, "sparq-bench: the %s pattern read read %zu bytes, the step %zu\n",
                 what, got, want);
    std::exit(1);
  };
  for (int round = 0; round < (quick ? 1 : 3); ++round) {
    double c1 = 0, c2 = 0;
    sample_roof();
    td.push_back(time_it(de, wsd, out_d.data(), c1));
    sample_roof();
    ts.push_back(time_it(sp, wss, out_s.data(), c2));
    std::size_t pattern_bytes = 0;
    tp.push_back(time_read(pool, nth, caches, budget, pattern_bytes,
                           [&](const cache_t& c, std::size_t ith, std::size_t n,
                               std::size_t& b) { return read_pattern(c, pattern, ith, n, b); }));
    check_bytes("SparQ", pattern_bytes, res.sparq_bytes);
    tq.push_back(time_read(pool, nth, caches, budget, pattern_bytes,
                           read_dense_pattern<cache_t>));
    check_bytes("dense", pattern_bytes, res.dense_bytes);
    sample_roof();
    cd.push_back(c1);
    cs.push_back(c2);
  }
  res.roof = median(rw);
  res.roof_min = *std::min_element(rw.begin(), rw.end());
  res.roof_max = *std::max_element(rw.begin(), rw.end());
  res.roof_cpu = median(rc);
  res.dense_us = median(td);
  res.sparq_us = median(ts);
  res.pattern_us = median(tp);
  res.dense_pattern_us = median(tq);
  res.dense_cpu_us = median(cd);
  res.sparq_cpu_us = median(cs);
  return res;
}

}  // namespace

int main(int argc, char** argv) {
  const options opt = parse_options(argc, argv, true);
  if (opt.exit_code >= 0) return opt.exit_code;
  const char* dt = opt.dtype.c_str();
  const bool quick = opt.quick;
  const std::string json = opt.json;
  const std::size_t nth = opt.threads;
  // --json: opened now, so a path that cannot be written fails before the run, not after it.
  file_ptr json_file;
  if (!json.empty() && !(json_file = open_json(argv[0], json))) return 2;

  sparq::thread_pool pool(nth);
  const std::size_t llc = llc_bytes();
  const std::size_t big = default_rotation_bytes();
  roof_meter meter(pool, nth, big);
  double roof_cpu = 0;
  const double roof = meter.measure(quick ? 3 : 9, roof_cpu);

  std::printf("sparq-bench: SparQ vs dense decode attention, batch 1, d = %zu, %zu query / %zu KV "
              "heads, %s KV, r = %zu, k = S/16, l = k/4\n",
              d, q_heads, kv_heads, dt, rank);
  std::printf("cpu: %s, %zu thread(s), LLC %.0f MiB; caches rotated over >= %.0f MiB; SIMD "
              "lanes %zu\n",
              cpu_model().c_str(), nth, llc / 1048576.0, big / 1048576.0, sparq::detail::lanes);
  std::printf("roof (in-process multi-threaded read of %.0f MiB): %.1f GB/s wall-clock "
              "(%.1f GB/s by thread CPU time) at start;\nre-sampled before, between the methods "
              "and after every round of each case: roof_GBs is that case's median, "
              "d_roof/s_roof use it\n\n",
              big / 1048576.0, roof, roof_cpu);
  std::printf("%7s %6s %5s | %10s %10s %7s | %9s %9s | %8s %8s %8s | %6s %6s\n", "S", "k", "l",
              "dense_us", "sparq_us", "speedup", "dense_MB", "sparq_MB", "dense_GBs",
              "sparq_GBs", "roof_GBs", "d_roof", "s_roof");

  std::vector<case_result> results;
  for (std::size_t S : {std::size_t{4096}, std::size_t{16384}, std::size_t{65536}}) {
    const case_result r =
        opt.dtype == "f32"    ? run_case<float>(S, pool, nth, quick, big, meter)
        : opt.dtype == "bf16" ? run_case<sparq::bf16>(S, pool, nth, quick, big, meter)
                              : run_case<sparq::f16>(S, pool, nth, quick, big, meter);
    const double dg = r.dense_gbps(), sg = r.sparq_gbps();
    std::printf("%7zu %6zu %5zu | %10.1f %10.1f %6.2fx | %9.2f %9.2f | %8.1f %8.1f %8.1f | "
                "%5.0f%% %5.0f%%\n",
                r.S, r.k, r.l, r.dense_us, r.sparq_us, r.dense_us / r.sparq_us,
                r.dense_bytes / 1e6, r.sparq_bytes / 1e6, dg, sg, r.roof, 100 * dg / r.roof,
                100 * sg / r.roof);
    std::fflush(stdout);
    results.push_back(r);
  }
  std::printf("\nbytes: measured by sparq::traffic_counter (K, Kt, V, v_mean reads); MB = 1e6 B, "
              "GB/s = 1e9 B/s; times: medians of wall-clock steps.\n");
  // A shared host's bandwidth can move by 2x within a case; say so where it did, because the
  // fractions of such a case compare a step with a roof measured under other conditions.
  for (const auto& r : results) {
    if (r.roof_moved())
      std::printf("unsteady: S = %zu: its roof samples ranged %.1f-%.1f GB/s (%.0f%% of their "
                  "median): the host's bandwidth moved during this case, so its roof fractions "
                  "are unreliable; re-run.\n",
                  r.S, r.roof_min, r.roof_max, 100 * r.roof_spread());
    if (r.dense_above_roof())  // a congested roof read can run slower than the dense step
      std::printf("unsteady: S = %zu: dense read %.1f GB/s, above the roof's %.1f: the roof "
                  "is no bound in this run (the host was congested); re-run.\n",
                  r.S, r.dense_gbps(), r.roof);
  }
  std::printf("\nThe same steps by thread CPU time (per step: sum over phases of the busiest "
              "thread's CPU time;\nunaffected by time-slicing with other processes, still "
              "sharing memory bandwidth with them):\n");
  std::printf("%7s | %10s %10s %7s | %8s %8s | %6s %6s\n", "S", "dense_cpu", "sparq_cpu",
              "speedup", "dense_GBs", "sparq_GBs", "d_roof", "s_roof");
  for (const auto& r : results) {
    const double dg = r.dense_bytes / r.dense_cpu_us * 1e-3;
    const double sg = r.sparq_bytes / r.sparq_cpu_us * 1e-3;
    std::printf("%7zu | %10.1f %10.1f %6.2fx | %8.1f %8.1f | %5.0f%% %5.0f%%\n", r.S,
                r.dense_cpu_us, r.sparq_cpu_us, r.dense_cpu_us / r.sparq_cpu_us, dg, sg,
                100 * dg / r.roof_cpu, 100 * sg / r.roof_cpu);
  }
  std::printf(
      "\nEach method against a plain read of its own bytes in about its own order, with no "
      "attention arithmetic.\nDense: every K and V row, 16 at a time, in batch_step's order of "
      "chunks and heads, prefetched as its\nattention kernel does. SparQ: per KV head its r Kt "
      "rows interleaved as stage 1 reads them, then the K and V rows at\nits positions, 16 at a "
      "time, prefetched as stage 2 does. pat_GBs: the read's GB/s; pat_roof: as a fraction\nof "
      "the roof; vs_pat: pattern us / step us (scattered rows are served slower than a stream). A "
      "yardstick,\nnot a bound: a kernel that overlaps its loads better than a plain loop can "
      "beat it.%s\n",
      nth > kv_heads
          ? " With more threads than KV heads, the SparQ pattern read leaves threads idle (the "
            "step splits S)."
          : "");
  std::printf("%7s | %19s | %8s %8s %6s | %19s | %8s %8s %6s\n", "S", "dense_us  pattern_us",
              "pat_GBs", "pat_roof", "vs_pat", "sparq_us  pattern_us", "pat_GBs", "pat_roof",
              "vs_pat");
  for (const auto& r : results) {
    const double dp = r.dense_pattern_gbps(), sp = r.pattern_gbps();
    std::printf("%7zu | %9.1f %9.1f | %8.1f %7.0f%% %5.0f%% | %9.1f %9.1f | %8.1f %7.0f%% "
                "%5.0f%%\n",
                r.S, r.dense_us, r.dense_pattern_us, dp, 100 * dp / r.roof,
                100 * r.dense_pattern_us / r.dense_us, r.sparq_us, r.pattern_us, sp,
                100 * sp / r.roof, 100 * r.pattern_us / r.sparq_us);
  }
  std::printf("\nSparQ vs dense output (synthetic keys, peaked queries), relative L2 difference:");
  for (const auto& r : results) std::printf(" S=%zu: %.3f", r.S, r.max_rel_diff);
  std::printf("\n");

  if (!json.empty()) {
    std::FILE* f = json_file.get();
    std::fprintf(f,
                 "{\"roof_gbps\": %.3f, \"roof_cpu_gbps\": %.3f, \"threads\": %zu, \"cpu\": "
                 "\"%s\", \"cases\": [",
                 roof, roof_cpu, nth, cpu_model().c_str());
    for (std::size_t i = 0; i < results.size(); ++i) {
      const auto& r = results[i];
      const double dg = r.dense_gbps(), sg = r.sparq_gbps(), pg = r.pattern_gbps();
      std::fprintf(f,
                   "%s\n  {\"seq_len\": %zu, \"dtype\": \"%s\", \"head_dim\": %zu, \"q_heads\": "
                   "%zu, \"kv_heads\": %zu, \"rank\": %zu, \"top_k\": %zu, \"local\": %zu, "
                   "\"dense_us\": %.3f, \"sparq_us\": %.3f, \"speedup\": %.4f, \"dense_bytes\": "
                   "%zu, \"sparq_bytes\": %zu, \"dense_gbps\": %.3f, \"sparq_gbps\": %.3f, "
                   "\"case_roof_gbps\": %.3f, \"case_roof_min_gbps\": %.3f, "
                   "\"case_roof_max_gbps\": %.3f, \"dense_roof_fraction\": %.4f, "
                   "\"sparq_roof_fraction\": %.4f, \"dense_cpu_us\": %.3f, \"sparq_cpu_us\": %.3f, "
                   "\"pattern_us\": %.3f, \"pattern_gbps\": %.3f, \"pattern_roof_fraction\": %.4f, "
                   "\"pattern_us_over_sparq_us\": %.4f, \"dense_pattern_us\": %.3f, "
                   "\"dense_pattern_gbps\": %.3f, \"dense_pattern_roof_fraction\": %.4f, "
                   "\"dense_pattern_us_over_dense_us\": %.4f, \"unsteady\": %s}",
                   i ? "," : "", r.S, dt, d, q_heads, kv_heads, rank, r.k, r.l, r.dense_us,
                   r.sparq_us, r.dense_us / r.sparq_us, r.dense_bytes, r.sparq_bytes, dg, sg,
                   r.roof, r.roof_min, r.roof_max, dg / r.roof, sg / r.roof, r.dense_cpu_us,
                   r.sparq_cpu_us, r.pattern_us,
                   pg, pg / r.roof, r.pattern_us / r.sparq_us, r.dense_pattern_us,
                   r.dense_pattern_gbps(), r.dense_pattern_gbps() / r.roof,
                   r.dense_pattern_us / r.dense_us, r.unsteady() ? "true" : "false");
    }
    std::fprintf(f, "\n]}\n");
    if (!close_json(argv[0], json, std::move(json_file))) return 1;
  }
  return 0;
}
