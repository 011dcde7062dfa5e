// prof-phases: where a batch_step's time goes, phase by phase, next to in-process read roofs
// over the same bytes. A profiling harness for kernel work, not part of the CI.
//
// Shape as sparq-bench: d = 128, 32 query / 8 KV heads (g = 4), batch 1, r = 16, k = S/16,
// l = k/4. The per-item pipeline mirrors batch_step::whole_item (include/sparq/parallel.hpp):
// prologue, stage-1 chunks of 4096 positions (approximate_logits + exp_shift_sum), reduce1,
// sel values, the block-max threshold, collect, keep_best (select_whole), gathered attention
// in blocks of 512, the log-sum-exp merge; dense runs attend_online over chunks of 4096. Each thread runs whole
// items (items / threads each), as batch_step does with items >= threads.
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
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <sys/mman.h>
#include <vector>

namespace {

using clk = std::chrono::steady_clock;
constexpr std::size_t d = 128, q_heads = 32, H = 8, g = q_heads / H, rank = 16;
constexpr std::size_t CH = sparq::parallel_chunk, AB = sparq::parallel_attend_block;

bool g_thp = false;  // --thp: back K, Kt, V with transparent huge pages (madvise)

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

enum ph { P_PRO, P_S1, P_RED, P_SEL, P_BUCK, P_COLL, P_FIN, P_ATT, P_MERGE, P_DENSE,
          P_DMERGE, R_STREAM_KV, R_STREAM_KT, R_GATHER, NPH };
const char* ph_name[NPH] = {"prologue", "stage1", "reduce1", "sel", "threshold", "collect",
                            "keep_best", "attend", "merge", "dense", "dmerge",
                            "roof:KV", "roof:Kt", "roof:gather"};

template <class T>
struct harness {
  std::size_t S, k, l, copies;
  float scale;
  std::vector<aligned_array<T>> kbuf, ktbuf, vbuf;  // per copy: [H][S][d], [H][d][S]
  std::vector<float> vmean;                              // [H][d]
  std::vector<float> q;                                  // [H][g][d]
  std::vector<float> out;
  std::size_t ld;
  // Per-thread scratch (one slot per thread, reused for each item, as batch_step).
  struct slot {
    std::vector<float> a, qs, e, sel, cm, cz, cf, blocks, p;
    std::vector<std::uint32_t> order, i1, hist, cnt, cpos, pos;
    std::vector<std::uint64_t> cand, info;
    std::vector<unsigned char> topk;
    std::vector<T> stage;
    double sink = 0;
  };
  std::vector<slot> slots;
  std::vector<std::vector<std::uint32_t>> item_pos, item_i1;  // the last SparQ run's choices

  harness(std::size_t S_, std::size_t nth, std::size_t rotate_bytes) : S(S_) {
    k = S / 16;
    l = k / 4;
    scale = 1.0f / std::sqrt(static_cast<float>(d));
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
    ld = sparq::detail::align_up(S, 16);
    const std::size_t nc = (S + CH - 1) / CH, nb = std::max(nc, (k + AB - 1) / AB);
    slots.resize(nth);
    item_pos.resize(H);
    item_i1.resize(H);
    for (auto& sl : slots) {
      sl.a.resize(d);
      sl.order.resize(d);
      sl.i1.resize(rank);
      sl.qs.resize(g * rank);
      sl.topk.resize(sparq::top_k_scratch_bytes(d));
      sl.e.resize(g * ld);
      sl.sel.resize(ld);
      sl.cm.resize(nc * g);
      sl.cz.resize(nc * g);
      sl.cf.resize(nc * g);
      sl.hist.resize(nc * sparq::detail::topk_buckets);
      sl.cnt.resize(nc);
      sl.cpos.resize(ld);
      sl.pos.resize(ld);
      sl.cand.resize(ld);
      sl.info.resize(4);
      sl.blocks.resize(nb * (g * d + 3 * g));
      sl.p.resize(g * sparq::detail::attend_block);
      sl.stage.resize(2 * 64 * d);
    }
  }

  sparq::kv_head_view<const T> view(std::size_t c, std::size_t h) const {
    const T* kp = kbuf[c].get() + h * S * d;
    const T* vp = vbuf[c].get() + h * S * d;
    const T* ktp = ktbuf[c].get() + h * d * S;
    return {{kp, S, d, d}, {ktp, d, S, S}, {vp, S, d, d}, vmean.data() + h * d};
  }

  // One SparQ item; t[] accumulates microseconds per phase.
  void sparq_item(std::size_t c, std::size_t it, slot& sl, double* t) {
    using namespace sparq;
    const auto kv = view(c, it);
    const float* qi = q.data() + it * g * d;
    const std::size_t nc = (S + CH - 1) / CH;
    double t0 = now_us(), t1;
    choose_components(qi, g, d, rank, sl.a.data(), sl.order.data(), sl.topk.data(), sl.i1.data());
    scaled_query_components(qi, g, d, sl.i1.data(), rank, scale, sl.qs.data());
    t1 = now_us(); t[P_PRO] += t1 - t0; t0 = t1;
    no_traffic nt;
    for (std::size_t ci = 0; ci < nc; ++ci) {
      const std::size_t s0 = ci * CH, s1 = std::min(S, s0 + CH);
      float* cm = sl.cm.data() + ci * g;
      float* cz = sl.cz.data() + ci * g;
      for (std::size_t h = 0; h < g; ++h) cm[h] = -std::numeric_limits<float>::infinity();
      approximate_logits(sl.qs.data(), g, rank, kv.kt, sl.i1.data(), s0, s1, sl.e.data(), ld, cm,
                         nt);
      for (std::size_t h = 0; h < g; ++h)
        cz[h] = detail::exp_shift_sum(sl.e.data() + h * ld + s0, s1 - s0, cm[h]);
    }
    t1 = now_us(); t[P_S1] += t1 - t0; t0 = t1;
    for (std::size_t h = 0; h < g; ++h) {
      float m = -std::numeric_limits<float>::infinity();
      for (std::size_t ci = 0; ci < nc; ++ci) m = std::max(m, sl.cm[ci * g + h]);
      float z = 0.0f;
      for (std::size_t ci = 0; ci < nc; ++ci) z += sl.cz[ci * g + h] * std::exp(sl.cm[ci * g + h] - m);
      for (std::size_t ci = 0; ci < nc; ++ci) sl.cf[ci * g + h] = std::exp(sl.cm[ci * g + h] - m) / z;
    }
    t1 = now_us(); t[P_RED] += t1 - t0; t0 = t1;
    // Selection as batch_step::select_whole: sel values, the block-max threshold, collect,
    // keep the best (the exact prefilter; batch_step falls back to histograms when k is large).
    const std::size_t rest = S - l, want = k - l;
    for (std::size_t ci = 0; ci < nc; ++ci) {
      const std::size_t s0 = ci * CH, s1 = std::min(rest, s0 + CH);
      if (s0 < s1) detail::sel_values(sl.e.data(), g, ld, sl.cf.data() + ci * g, s0, s1, sl.sel.data());
    }
    t1 = now_us(); t[P_SEL] += t1 - t0; t0 = t1;
    const std::uint32_t lo = detail::block_max_threshold(
        sl.sel.data(), rest, want, detail::prefilter_vectors(rest, want), sl.cpos.data());
    t1 = now_us(); t[P_BUCK] += t1 - t0; t0 = t1;
    std::size_t m = detail::collect_key_at_least(sl.sel.data(), 0, rest, lo, sl.pos.data());
    t1 = now_us(); t[P_COLL] += t1 - t0; t0 = t1;
    m = detail::keep_best(sl.sel.data(), sl.pos.data(), m, want, sl.cand.data());
    for (std::size_t p = rest; p < S; ++p) sl.pos[m++] = static_cast<std::uint32_t>(p);
    item_pos[it].assign(sl.pos.begin(), sl.pos.begin() + m);
    item_i1[it].assign(sl.i1.begin(), sl.i1.end());
    t1 = now_us(); t[P_FIN] += t1 - t0; t0 = t1;
    const std::size_t bs = g * d + 3 * g;
    const std::size_t nb = (m + AB - 1) / AB;
    for (std::size_t j = 0; j < nb; ++j) {
      const std::size_t p0 = j * AB, n = std::min(AB, m - p0);
      float* st = sl.blocks.data() + j * bs;
      const detail::online_state os{st, st + g * d, st + g * d + g};
      detail::online_init(os, g, d);
      detail::attend_online<d>(qi, g, d, scale, kv.k, kv.v,
                               detail::indexed_positions{sl.pos.data() + p0}, n, os,
                               sl.p.data(), nt);
      float* ap = st + g * d + 2 * g;
      for (std::size_t h = 0; h < g; ++h) {
        float a = 0.0f;
        for (std::size_t i = 0; i < n; ++i) {
          const std::uint32_t ps = sl.pos[p0 + i];
          a += sl.e[h * ld + ps] * sl.cf[(ps / CH) * g + h];
        }
        ap[h] = a;
      }
    }
    t1 = now_us(); t[P_ATT] += t1 - t0; t0 = t1;
    merge(it, sl, nb, false, kv.v_mean);
    t1 = now_us(); t[P_MERGE] += t1 - t0;
  }

  void merge(std::size_t it, slot& sl, std::size_t nb, bool dense, const float* vm) {
    const std::size_t bs = g * d + 3 * g;
    float* o0 = out.data() + it * g * d;
    for (std::size_t h = 0; h < g; ++h) {
      float m = -std::numeric_limits<float>::infinity();
      for (std::size_t j = 0; j < nb; ++j) m = std::max(m, sl.blocks[j * bs + g * d + h]);
      float z = 0.0f, alpha = 0.0f;
      float* o = o0 + h * d;
      for (std::size_t i = 0; i < d; ++i) o[i] = 0.0f;
      for (std::size_t j = 0; j < nb; ++j) {
        const float* st = sl.blocks.data() + j * bs;
        const float bz = st[g * d + g + h];
        if (bz == 0.0f) continue;
        const float c = std::exp(st[g * d + h] - m);
        z += bz * c;
        for (std::size_t i = 0; i < d; ++i) o[i] += st[h * d + i] * c;
        if (!dense) alpha += st[g * d + 2 * g + h];
      }
      const float inv = z > 0.0f ? 1.0f / z : 0.0f;
      for (std::size_t i = 0; i < d; ++i) o[i] *= inv;
      if (!dense) {
        alpha = std::min(alpha, 1.0f);
        for (std::size_t i = 0; i < d; ++i) o[i] = alpha * o[i] + (1 - alpha) * vm[i];
      }
    }
  }

  void dense_item(std::size_t c, std::size_t it, slot& sl, double* t) {
    using namespace sparq;
    const auto kv = view(c, it);
    const float* qi = q.data() + it * g * d;
    const std::size_t nc = (S + CH - 1) / CH, bs = g * d + 3 * g;
    no_traffic nt;
    double t0 = now_us();
    for (std::size_t ci = 0; ci < nc; ++ci) {
      const std::size_t s0 = ci * CH, n = std::min(CH, S - s0);
      float* st = sl.blocks.data() + ci * bs;
      const detail::online_state os{st, st + g * d, st + g * d + g};
      detail::online_init(os, g, d);
      detail::attend_online<d>(qi, g, d, scale, kv.k, kv.v, detail::contiguous_positions{s0}, n,
                               os, sl.p.data(), nt);
    }
    double t1 = now_us();
    t[P_DENSE] += t1 - t0;
    merge(it, sl, nc, true, nullptr);
    t[P_DMERGE] += now_us() - t1;
  }

  // Roofs over the same bytes as the item's phases.
  void roof_kv(std::size_t c, std::size_t it, slot& sl, double* t) {
    const auto kv = view(c, it);
    double t0 = now_us();
    sl.sink += sum_bytes(kv.k.data, S * d * sizeof(T)) + sum_bytes(kv.v.data, S * d * sizeof(T));
    t[R_STREAM_KV] += now_us() - t0;
  }
  void roof_kt(std::size_t c, std::size_t it, slot& sl, double* t) {
    const auto kv = view(c, it);
    double t0 = now_us();
    for (std::size_t j = 0; j < rank; ++j)
      sl.sink += sum_bytes(kv.kt.dim_row(item_i1[it][j]), S * sizeof(T));
    t[R_STREAM_KT] += now_us() - t0;
  }
  // Needs the positions of a preceding sparq_item of the same item (the same for every copy).
  void roof_gather(std::size_t c, std::size_t it, slot& sl, double* t) {
    const std::size_t m = item_pos[it].size();
    const auto kv = view(c, it);
    double t0 = now_us();
    T* ks = sl.stage.data();
    T* vs = ks + 64 * d;
    for (std::size_t j = 0; j < m; ++j) {
      const std::size_t p = item_pos[it][j];
      std::memcpy(ks + (j % 64) * d, kv.k.row(p), d * sizeof(T));
      std::memcpy(vs + (j % 64) * d, kv.v.row(p), d * sizeof(T));
      asm volatile("" ::: "memory");
    }
    t[R_GATHER] += now_us() - t0;
  }
  static double sum_bytes(const void* p, std::size_t bytes) {
    return sparq_bench::sum_floats(static_cast<const float*>(p), bytes / sizeof(float));
  }
};

template <class T>
int run(std::size_t S, std::size_t nth, int steps, bool hot, std::size_t rotate_mib,
        const std::string& only) {
  harness<T> hz(S, nth, hot ? 0 : rotate_mib << 20);
  const std::size_t npos = hz.k;  // gathered rows per item
  (void)only;
  const double kt_bytes = double(H) * rank * S * sizeof(T);
  const double kv_bytes = double(H) * 2 * S * d * sizeof(T);
  const double gat_bytes = double(H) * 2 * npos * d * sizeof(T);
  // per step, per thread: phase times (us), then medians over steps.
  std::vector<std::vector<double>> samples(NPH);
  spin_barrier bar(nth);
  std::vector<std::array<double, NPH>> tt(nth);
  std::vector<double> cpu(nth);
  std::size_t copy = 0;
  const bool do_sparq = only != "dense", do_dense = only != "sparq";
  // Modes per step: 0 sparq, 1 dense, 2 roofs.
  auto worker = [&](std::size_t ith, int mode, std::size_t c) {
    auto& sl = hz.slots[ith];
    double* t = tt[ith].data();
    const std::size_t i0 = ith * H / nth, i1 = (ith + 1) * H / nth;
    const double c0 = thread_cpu_us();
    for (std::size_t it = i0; it < i1; ++it) {
      if (mode == 0) hz.sparq_item(c, it, sl, t);
      else if (mode == 1) hz.dense_item(c, it, sl, t);
      else if (mode == 2) hz.roof_kv(c, it, sl, t);
      else if (mode == 3) hz.roof_kt(c, it, sl, t);
      else hz.roof_gather(c, it, sl, t);
    }
    cpu[ith] = thread_cpu_us() - c0;
  };
  std::vector<int> modes;
  if (only != "dense") modes.push_back(0);  // the Kt and gather roofs need its positions
  if (do_dense) modes.push_back(1);
  modes.push_back(2);
  if (only != "dense") {
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
  // Median and best (min) over steps: the machine may be shared, and interference only
  // slows a step down, so the best step is the least disturbed one.
  auto line = [&](int p, double bytes) {
    const double us = median(samples[p]);
    const double best = samples[p].empty() ? 0 : *std::min_element(samples[p].begin(), samples[p].end());
    if (bytes > 0)
      std::printf("  %-12s %9.1f us (best %9.1f)  %8.2f MB  %6.1f GB/s (best %6.1f)\n",
                  ph_name[p], us, best, bytes / 1e6, bytes / us * 1e-3, bytes / best * 1e-3);
    else
      std::printf("  %-12s %9.1f us (best %9.1f)\n", ph_name[p], us, best);
  };
  if (do_sparq) {
    std::printf(" sparq: step wall %.1f us (crit cpu %.1f us); phases (busiest thread):\n",
                median(wall[0]), median(crit[0]));
    line(P_PRO, 0);
    line(P_S1, kt_bytes);
    line(P_RED, 0);
    line(P_SEL, 0);
    line(P_BUCK, 0);
    line(P_COLL, 0);
    line(P_FIN, 0);
    line(P_ATT, gat_bytes);
    line(P_MERGE, 0);
    std::printf(" sparq bytes %.2f MB -> %.1f GB/s by wall\n", (kt_bytes + gat_bytes) / 1e6,
                (kt_bytes + gat_bytes) / median(wall[0]) * 1e-3);
  }
  if (do_dense) {
    std::printf(" dense: step wall %.1f us (crit cpu %.1f us)\n", median(wall[1]), median(crit[1]));
    line(P_DENSE, kv_bytes);
    line(P_DMERGE, 0);
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
  for (auto& sl : hz.slots) sink += sl.sink;
  std::printf(" (sink %g, out[0] %g)\n", sink, hz.out[0]);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::size_t S = 65536, nth = 2, rot = 1024;
  int steps = 30;
  bool f32 = false, hot = false;
  std::string only;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() { return i + 1 < argc ? std::strtoul(argv[++i], nullptr, 10) : 0ul; };
    if (a == "--S") S = next();
    else if (a == "--threads") nth = next();
    else if (a == "--steps") steps = static_cast<int>(next());
    else if (a == "--rotate") rot = next();
    else if (a == "--f32") f32 = true;
    else if (a == "--hot") hot = true;
    else if (a == "--thp") g_thp = true;
    else if (a == "--only" && i + 1 < argc) only = argv[++i];
    else {
      std::fprintf(stderr, "usage: %s [--S N] [--threads N] [--steps N] [--f32] [--hot] "
                           "[--rotate MiB] [--only sparq|dense] [--thp]\n", argv[0]);
      return 2;
    }
  }
  return f32 ? run<float>(S, nth, steps, hot, rot, only)
             : run<sparq::f16>(S, nth, steps, hot, rot, only);
}
