// prof-phases: where a batch_step's time goes, phase by phase, next to in-process read roofs
// over the same bytes. A profiling harness for kernel work, not part of the CI.
//
// Shape as sparq-bench: d = 128, 32 query / 8 KV heads (g = 4), batch 1, r = 16, k = S/16,
// l = k/4. The steps are the library's own sparq::batch_step (SparQ, and batch_mode::dense),
// run on this program's threads through run_phase with a timing policy: the stage marks a
// step gives its traffic policy (scores, select, attend, reallocate; dense) are the phase
// boundaries, so nothing here re-implements the pipeline. With threads <= items (8) every
// SparQ thread runs whole items; with more, the S-split path runs (its phases mark scores,
// select, attend, reallocate as whole items do). Dense mode runs chunks, then merges.
//
// K, Kt, V live in plain arrays (no kv_cache append), copied until they exceed --rotate MiB,
// and each step uses the next copy, so every step streams from DRAM (--hot: one copy).
//
// Roofs (same process, same threads, same bytes): "stream" sums the step's K+V (dense) or
// its r Kt rows (stage 1) contiguously; "gather" copies the selected K and V rows into a
// small L1 buffer (a plain gather of the same rows as the gathered attention).
//
// Usage: prof-phases [--S N] [--threads N] [--steps N] [--f32] [--hot] [--rotate MiB]
//                    [--only sparq|dense] [--thp]
// (S: 16..2^22, threads: 1..1024, steps: 1..10^6, rotate: 1..2^24 MiB; bad values exit 2.)
// --only sparq skips dense, --only dense skips SparQ and its roofs; --thp backs K, Kt, V with transparent huge pages (madvise).

#include <sparq/parallel.hpp>
#include <sparq/sparq.hpp>

#include "bench_harness.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <sys/mman.h>
#include <vector>

namespace {

using clk = std::chrono::steady_clock;
constexpr std::size_t d = 128, q_heads = 32, H = 8, g = q_heads / H, rank = 16;

bool g_thp = false;  // --thp: back K, Kt, V with transparent huge pages (madvise)
// Command-line bounds: S >= 16 gives k = S/16 >= 1; S = 2^22 is 24 GiB a copy at f16.
constexpr std::size_t max_seq = std::size_t{1} << 22, max_steps = 1000000,
                      max_rotate_mib = std::size_t{1} << 24;

using sparq_bench::aligned_array;
template <class T>
aligned_array<T> alloc_array(std::size_t n) {
  constexpr std::size_t align = std::size_t{2} << 20;
  auto a = sparq_bench::make_aligned_array<T>(n, align);
  if (g_thp) madvise(a.get(), (n * sizeof(T) + align - 1) / align * align, MADV_HUGEPAGE);
  return a;
}

double now_us() {
  return std::chrono::duration<double, std::micro>(clk::now().time_since_epoch()).count();
}
using sparq_bench::median;
using sparq_bench::thread_cpu_us;

struct spin_barrier {
  std::atomic<std::size_t> count{0}, gen{0};
  std::size_t n;
  explicit spin_barrier(std::size_t n_) : n(n_) {}
  void wait() {
    const std::size_t g0 = gen.load(std::memory_order_acquire);
    if (count.fetch_add(1, std::memory_order_acq_rel) + 1 == n) {
      count.store(0, std::memory_order_relaxed);
      gen.fetch_add(1, std::memory_order_release);
    } else {
      while (gen.load(std::memory_order_acquire) == g0) __builtin_ia32_pause();
    }
  }
};

/// A traffic policy that counts nothing and times the stages a step marks: each begin(s)
/// closes the running stage's interval and opens s's; end() closes the last one.
struct phase_timer {
  static constexpr bool enabled = false;
  double t[sparq::stage_count] = {};
  int cur = -1;
  double t0 = 0;
  void begin(sparq::stage s) noexcept {
    const double n = now_us();
    if (cur >= 0) t[cur] += n - t0;
    cur = static_cast<int>(s);
    t0 = n;
  }
  void end() noexcept {
    if (cur >= 0) t[cur] += now_us() - t0;
    cur = -1;
  }
  void read(sparq::arena, const void*, std::size_t) noexcept {}
  void write(sparq::arena, const void*, std::size_t) noexcept {}
};

// Rows of the report: the step's stages, then the roofs.
constexpr int R_STREAM_KV = sparq::stage_count, R_STREAM_KT = R_STREAM_KV + 1,
              R_GATHER = R_STREAM_KV + 2, NPH = R_STREAM_KV + 3;
const char* row_name(int p) {
  static const char* roofs[] = {"roof:KV", "roof:Kt", "roof:gather"};
  return p < sparq::stage_count ? sparq::stage_name(static_cast<sparq::stage>(p))
                                : roofs[p - sparq::stage_count];
}

template <class T>
struct harness {
  using view_t = sparq::kv_head_view<const T>;
  std::size_t S, k, l, copies;
  std::vector<aligned_array<T>> kbuf, ktbuf, vbuf;  // per copy: [H][S][d], [H][d][S]
  std::vector<float> vmean;                          // [H][d]
  std::vector<float> q;                              // [H][g][d]
  std::vector<float> out;
  sparq::config cfg;
  sparq::batch_step<T> sparq_st, dense_st;
  std::vector<std::byte> sparq_ws, dense_ws;
  std::vector<double> sink;  // per thread
  // The roofs' rows: each item's components and positions as sparq::step chooses them.
  std::vector<std::vector<std::uint32_t>> item_pos, item_i1;

  static sparq::config config_for(std::size_t S) {
    sparq::config c;
    c.rank = rank;
    c.top_k = S / 16;
    c.local = c.top_k / 4;
    return c;
  }

  harness(std::size_t S_, std::size_t nth, std::size_t rotate_bytes)
      : S(S_), cfg(config_for(S_)), sparq_st(1, H, g, S_, d, cfg, nth),
        dense_st(1, H, g, S_, d, cfg, nth, sparq::batch_mode::dense),
        sparq_ws(sparq_st.workspace_bytes()), dense_ws(dense_st.workspace_bytes()), sink(nth) {
    k = cfg.top_k;
    l = cfg.local;
    const std::size_t per = H * S * d;
    const std::size_t per_copy = 3 * per * sizeof(T);
    copies = std::max<std::size_t>(1, (rotate_bytes + per_copy - 1) / per_copy);
    kbuf.push_back(alloc_array<T>(per));
    ktbuf.push_back(alloc_array<T>(per));
    vbuf.push_back(alloc_array<T>(per));
    std::mt19937_64 rng(42);
    auto nrm = [&]() {  // cheap ~N(0,1): sum of 4 uniforms, rescaled
      float s = 0;
      for (int i = 0; i < 4; ++i) s += static_cast<float>(rng() >> 40) * (1.0f / 16777216.0f);
      return (s - 2.0f) * 1.7320508f;
    };
    vmean.assign(H * d, 0.0f);
    for (std::size_t h = 0; h < H; ++h)
      for (std::size_t s = 0; s < S; ++s)
        for (std::size_t i = 0; i < d; ++i) {
          const T kx = sparq::from_float<T>(nrm()), vx = sparq::from_float<T>(nrm());
          kbuf[0][(h * S + s) * d + i] = kx;
          ktbuf[0][(h * d + i) * S + s] = kx;
          vbuf[0][(h * S + s) * d + i] = vx;
          vmean[h * d + i] += sparq::to_float(vx) / static_cast<float>(S);
        }
    for (std::size_t c = 1; c < copies; ++c) {
      kbuf.push_back(alloc_array<T>(per));
      ktbuf.push_back(alloc_array<T>(per));
      vbuf.push_back(alloc_array<T>(per));
      std::memcpy(kbuf[c].get(), kbuf[0].get(), per * sizeof(T));
      std::memcpy(ktbuf[c].get(), ktbuf[0].get(), per * sizeof(T));
      std::memcpy(vbuf[c].get(), vbuf[0].get(), per * sizeof(T));
    }
    q.resize(q_heads * d);
    std::uniform_int_distribution<std::size_t> pick(0, S - 1);
    for (std::size_t h = 0; h < q_heads; ++h) {
      float* qh = q.data() + h * d;
      for (std::size_t i = 0; i < d; ++i) qh[i] = 0.3f * nrm();
      for (int t = 0; t < 4; ++t) {
        const T* kr = kbuf[0].get() + ((h / g) * S + pick(rng)) * d;
        for (std::size_t i = 0; i < d; ++i) qh[i] += 0.5f * sparq::to_float(kr[i]);
      }
    }
    out.resize(q_heads * d);
    item_pos.resize(H);
    item_i1.resize(H);
    auto ws = sparq::workspace_buffer<>::for_step(g, S, d, cfg);
    std::vector<float> o(g * d);
    for (std::size_t h = 0; h < H; ++h) {
      const sparq::step_result r = sparq::step(q.data() + h * g * d, g, view(0, h), cfg, ws, o.data());
      item_pos[h].assign(r.positions, r.positions + r.n_positions);
      item_i1[h].assign(r.components, r.components + r.n_components);
    }
  }

  view_t view(std::size_t c, std::size_t h) const {
    const T* kp = kbuf[c].get() + h * S * d;
    const T* vp = vbuf[c].get() + h * S * d;
    const T* ktp = ktbuf[c].get() + h * d * S;
    return {{kp, S, d, d}, {ktp, d, S, S}, {vp, S, d, d}, vmean.data() + h * d};
  }

  /// Binds copy c to the SparQ (dense == false) or dense step; one thread, before the phases.
  void prepare(bool dense, std::size_t c, std::size_t nth) {
    auto& st = dense ? dense_st : sparq_st;
    auto& ws = dense ? dense_ws : sparq_ws;
    st.prepare_views(q.data(), out.data(), [&](std::size_t, std::size_t h) { return view(c, h); },
                     {ws.data(), ws.size()}, nth);
  }

  // Roofs over the same bytes as the step's phases, for thread ith's items.
  void roof_kv(std::size_t c, std::size_t it, std::size_t ith) {
    const auto kv = view(c, it);
    sink[ith] += sum_bytes(kv.k.data, S * d * sizeof(T)) + sum_bytes(kv.v.data, S * d * sizeof(T));
  }
  void roof_kt(std::size_t c, std::size_t it, std::size_t ith) {
    const auto kv = view(c, it);
    for (std::size_t j = 0; j < item_i1[it].size(); ++j)
      sink[ith] += sum_bytes(kv.kt.dim_row(item_i1[it][j]), S * sizeof(T));
  }
  void roof_gather(std::size_t c, std::size_t it, T* stage) {
    const std::size_t m = item_pos[it].size();
    const auto kv = view(c, it);
    T* ks = stage;
    T* vs = ks + 64 * d;
    for (std::size_t j = 0; j < m; ++j) {
      const std::size_t p = item_pos[it][j];
      std::memcpy(ks + (j % 64) * d, kv.k.row(p), d * sizeof(T));
      std::memcpy(vs + (j % 64) * d, kv.v.row(p), d * sizeof(T));
      asm volatile("" ::: "memory");
    }
  }
  // The roofs' plain read: read_floats, as sparq-bench's roof (one line touched 32 KiB ahead
  // per 4 KiB; the unhinted sum read ~25% slower, 2026-11-25).
  static double sum_bytes(const void* p, std::size_t bytes) {
    return sparq_bench::read_floats(static_cast<const float*>(p), bytes / sizeof(float));
  }
};

template <class T>
int run(std::size_t S, std::size_t nth, int steps, bool hot, std::size_t rotate_mib,
        const std::string& only) {
  harness<T> hz(S, nth, hot ? 0 : rotate_mib << 20);
  std::size_t npos = 0;  // gathered rows over all items
  for (const auto& p : hz.item_pos) npos += p.size();
  const double kt_bytes = double(H) * rank * S * sizeof(T);
  const double kv_bytes = double(H) * 2 * S * d * sizeof(T);
  const double gat_bytes = double(npos) * 2 * d * sizeof(T);
  // per step, per thread: phase times (us), then medians over steps.
  std::vector<std::vector<double>> samples(NPH);
  spin_barrier bar(nth);
  std::vector<std::array<double, NPH>> tt(nth);
  std::vector<double> cpu(nth);
  std::vector<std::vector<T>> stage_rows(nth, std::vector<T>(2 * 64 * d));
  std::size_t copy = 0;
  const bool do_sparq = only != "dense", do_dense = only != "sparq";
  // Modes per step: 0 sparq, 1 dense, 2-4 roofs (KV stream, Kt rows, gather). The steps run
  // every phase of the prepared batch_step (a barrier between phases); the roofs split the
  // items over the threads as whole-item steps do.
  auto worker = [&](std::size_t ith, int mode, std::size_t c) {
    double* t = tt[ith].data();
    const double c0 = thread_cpu_us();
    if (mode <= 1) {
      auto& st = mode == 0 ? hz.sparq_st : hz.dense_st;
      phase_timer pt;
      for (std::size_t p = 0, np = st.phases(); p < np; ++p) {
        if (p) {
          pt.end();
          bar.wait();
        }
        st.run_phase(p, ith, nth, pt);
      }
      pt.end();
      for (int s = 0; s < sparq::stage_count; ++s) t[s] += pt.t[s];
    } else {
      const std::size_t i0 = ith * H / nth, i1 = (ith + 1) * H / nth;
      const double t0 = now_us();
      for (std::size_t it = i0; it < i1; ++it) {
        if (mode == 2) hz.roof_kv(c, it, ith);
        else if (mode == 3) hz.roof_kt(c, it, ith);
        else hz.roof_gather(c, it, stage_rows[ith].data());
      }
      t[R_STREAM_KV + (mode - 2)] += now_us() - t0;
    }
    cpu[ith] = thread_cpu_us() - c0;
  };
  std::vector<int> modes;
  if (do_sparq) modes.push_back(0);
  if (do_dense) modes.push_back(1);
  modes.push_back(2);
  if (do_sparq) {
    modes.push_back(3);
    modes.push_back(4);
  }
  // Threads persist over the run; thread 0 is this one.
  std::atomic<int> cmd{-1};
  std::atomic<std::size_t> cmd_copy{0};
  std::atomic<bool> stop{false};
  auto body = [&](std::size_t ith) {
    for (;;) {
      bar.wait();
      if (stop.load()) return;
      const int m = cmd.load();
      worker(ith, m, cmd_copy.load());
      bar.wait();
    }
  };
  std::vector<std::thread> th;
  for (std::size_t i = 1; i < nth; ++i) th.emplace_back(body, i);
  auto step = [&](int mode, std::size_t c) {
    for (auto& a : tt) a.fill(0.0);
    if (mode <= 1) hz.prepare(mode == 1, c, nth);
    cmd.store(mode);
    cmd_copy.store(c);
    bar.wait();
    const double w0 = now_us();
    worker(0, mode, c);
    bar.wait();
    return now_us() - w0;
  };
  // Warm-up over all copies.
  for (int mode : modes)
    for (std::size_t c = 0; c < hz.copies; ++c) step(mode, c);
  std::vector<std::vector<double>> wall(5), crit(5);
  for (int s = 0; s < steps; ++s)
    for (int mode : modes) {
      const double w = step(mode, copy);
      copy = (copy + 1) % hz.copies;
      wall[mode].push_back(w);
      double worst = 0;
      for (std::size_t i = 0; i < nth; ++i) worst = std::max(worst, cpu[i]);
      crit[mode].push_back(worst);
      // Per phase: the busiest thread's time.
      for (int p = 0; p < NPH; ++p) {
        double mx = 0;
        for (std::size_t i = 0; i < nth; ++i) mx = std::max(mx, tt[i][p]);
        if (mx > 0) samples[p].push_back(mx);
      }
    }
  stop.store(true);
  bar.wait();
  for (auto& t : th) t.join();

  std::printf("S = %zu, %s, %zu thread(s), k = %zu, l = %zu, copies = %zu (%.0f MiB each)%s%s\n", S,
              sizeof(T) == 2 ? "f16" : "f32", nth, hz.k, hz.l, hz.copies,
              3.0 * H * S * d * sizeof(T) / 1048576.0, hot ? " HOT" : "", g_thp ? " THP" : "");
  if (nth > H)
    std::printf("(threads > items: the S-split path; its selection phases are in no stage's time)\n");
  // Median and best (min) over steps: the machine may be shared, and interference only
  // slows a step down, so the best step is the least disturbed one.
  auto line = [&](int p, double bytes) {
    if (samples[p].empty()) {
      std::printf("  %-12s (no time marked)\n", row_name(p));
      return;
    }
    const double us = median(samples[p]);
    const double best = samples[p].empty() ? 0 : *std::min_element(samples[p].begin(), samples[p].end());
    if (bytes > 0)
      std::printf("  %-12s %9.1f us (best %9.1f)  %8.2f MB  %6.1f GB/s (best %6.1f)\n",
                  row_name(p), us, best, bytes / 1e6, bytes / us * 1e-3, bytes / best * 1e-3);
    else
      std::printf("  %-12s %9.1f us (best %9.1f)\n", row_name(p), us, best);
  };
  using sparq::stage;
  if (do_sparq) {
    std::printf(" sparq: step wall %.1f us (crit cpu %.1f us); stages (busiest thread; scores "
                "includes the components, reallocate the block merge):\n",
                median(wall[0]), median(crit[0]));
    line(static_cast<int>(stage::scores), kt_bytes);
    line(static_cast<int>(stage::select), 0);
    line(static_cast<int>(stage::attend), gat_bytes);
    line(static_cast<int>(stage::reallocate), 0);
    std::printf(" sparq bytes %.2f MB -> %.1f GB/s by wall\n", (kt_bytes + gat_bytes) / 1e6,
                (kt_bytes + gat_bytes) / median(wall[0]) * 1e-3);
  }
  if (do_dense) {
    std::printf(" dense: step wall %.1f us (crit cpu %.1f us)\n", median(wall[1]), median(crit[1]));
    line(static_cast<int>(stage::dense), kv_bytes);
  }
  // Per step: the method's GB/s over the KV roof's GB/s of the same step (interleaved, so
  // both see the same machine load); medians.
  auto frac = [&](int mode, double bytes) {
    std::vector<double> f;
    for (std::size_t i = 0; i < wall[mode].size() && i < wall[2].size(); ++i)
      f.push_back((bytes / wall[mode][i]) / (kv_bytes / wall[2][i]));
    return median(f);
  };
  if (do_sparq)
    std::printf(" sparq GB/s / roof (per-step ratio, median): %.0f%%\n",
                100 * frac(0, kt_bytes + gat_bytes));
  if (do_dense)
    std::printf(" dense GB/s / roof (per-step ratio, median): %.0f%%\n", 100 * frac(1, kv_bytes));
  std::printf(" roofs:\n");
  line(R_STREAM_KV, kv_bytes);
  if (do_sparq) {
    line(R_STREAM_KT, kt_bytes);
    line(R_GATHER, gat_bytes);
  }
  double sink = 0;
  for (double x : hz.sink) sink += x;
  std::printf(" (sink %g, out[0] %g)\n", sink, hz.out[0]);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::size_t S = 65536, nth = 2, rot = 1024, steps = 30;
  bool f32 = false, hot = false;
  std::string only;
  const char* prog = argv[0];
  auto usage = [&](int code) {
    std::fprintf(code ? stderr : stdout,
                 "usage: %s [--S N] [--threads N] [--steps N] [--f32] [--hot] [--rotate MiB] "
                 "[--only sparq|dense] [--thp]\n  --S 16..%zu (k = S/16), --threads 1..%zu, "
                 "--steps 1..%zu, --rotate 1..%zu MiB\n",
                 prog, max_seq, sparq_bench::max_threads, max_steps, max_rotate_mib);
    return code;
  };
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "-h" || a == "--help") return usage(0);
    const bool takes_value = a == "--S" || a == "--threads" || a == "--steps" ||
                             a == "--rotate" || a == "--only";
    if (takes_value && i + 1 >= argc) {
      std::fprintf(stderr, "%s: %s needs a value\n", prog, a.c_str());
      return usage(2);
    }
    // A number in [lo, hi] after option a (message printed when it is not).
    auto number = [&](std::size_t lo, std::size_t hi, std::size_t& out) {
      return sparq_bench::parse_uint_option(prog, a.c_str(), argv[++i], lo, hi, out);
    };
    bool ok = true;
    if (a == "--S") ok = number(16, max_seq, S);
    else if (a == "--threads") ok = number(1, sparq_bench::max_threads, nth);
    else if (a == "--steps") ok = number(1, max_steps, steps);
    else if (a == "--rotate") ok = number(1, max_rotate_mib, rot);
    else if (a == "--f32") f32 = true;
    else if (a == "--hot") hot = true;
    else if (a == "--thp") g_thp = true;
    else if (a == "--only") {
      only = argv[++i];
      ok = only == "sparq" || only == "dense";
      if (!ok) std::fprintf(stderr, "%s: --only %s: allowed: sparq, dense\n", prog, only.c_str());
    } else {
      std::fprintf(stderr, "%s: unknown option %s\n", prog, a.c_str());
      ok = false;
    }
    if (!ok) return usage(2);
  }
  try {
    const int n = static_cast<int>(steps);
    return f32 ? run<float>(S, nth, n, hot, rot, only) : run<sparq::f16>(S, nth, n, hot, rot, only);
  } catch (const std::exception& e) {  // sparq::error (a bad size) or bad_alloc
    std::fprintf(stderr, "%s: %s\n", prog, e.what());
    return 1;
  }
}
