// sparq-bench-kernels: Google Benchmark suite of the kernels, single-threaded.
//
// Names are filter-friendly, e.g.
//   step/sparq/f16/gqa32x8/B1/S16384/r16/k1024     step/dense/f16/gqa32x8/B1/S16384
//   topk/sparq/n65536/k4096    topk/nth_element/n65536/k4096    topk/partial_sort/...
// (--benchmark_filter='step/.*/S65536' runs the 64k cases.)
//
// Steps run through sparq::batch_step with one thread over all B x H_kv items. Bytes per
// iteration (SetBytesProcessed, so bytes_per_second is reported) are what the kernels report
// to a sparq::traffic_counter in one untimed run. One KV cache is built per shape and reused
// by the following cases of the same shape, with copies of it: successive iterations rotate
// over enough copies that one cycle reads the rotation size (default 1 GiB; copies capped at
// 4x that in memory), so a step's rows come from DRAM, not from the last-level cache (after
// one untimed step on every copy). Counter rotation_MiB: what a cycle read.
//
// The cases that read the cache from DRAM (step/, dense/) also report, as counters:
//   bytes_per_step  bytes read per iteration
//   GBps            those bytes per second of the thread's CPU time over the timed loop, in
//                   1e9 B/s (Google Benchmark's bytes_per_second: the same in binary units)
//   roof_GBps       a one-thread STREAM-like read of an array of the rotation size in this
//                   process (sparq_bench::roof_meter), sampled before each case's timed loop,
//                   by thread CPU time as Google Benchmark's rates are
//   roof_pct        GBps as a percentage of roof_GBps
//
// Usage: sparq-bench-kernels [--rotate_mib=N] [Google Benchmark flags]
//   --rotate_mib=N  bytes a rotation cycle reads and the size of the roof's array, in MiB
//                   (an integer from 1 to 2^24; default max(1024, 2 x LLC)); small values are
//                   for smoke tests, as the copies then fit in the LLC.
//
// Cross product, pruned to a few minutes:
//   f16, GQA 32/8, B = 1:  S in {1k, 4k, 16k, 64k, 128k}, dense and SparQ (r = 16, k = S/16)
//   f32 and bf16:          S in {4k, 16k}
//   MHA 32/32:             S in {4k, 16k}
//   B = 8:                 S in {4k, 16k}
//   r in {8, 16, 32} x k in {64, 128, S/16}: f16 GQA B = 1, S in {16k, 64k} (SparQ only)
//   top-k over 64k scores, k in {128, 4096}: sparq::top_k vs std::nth_element, partial_sort
//   traffic/none vs traffic/counter: what the traffic policy costs (the default: nothing)
//   attend/hot: the gathered attention kernel's arithmetic alone (rows resident in L1)
//   dense/layout: dense_step from DRAM with packed, K|V-interleaved and token-major rows
//   dense/batch_layout: batch_step's dense mode over all 8 heads, packed and token-major

#include <benchmark/benchmark.h>

#include "bench_harness.hpp"

#include <sparq/parallel.hpp>
#include <sparq/sparq.hpp>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

namespace {

constexpr std::size_t d = 128;

// Bytes of cache copies the step cases rotate over, and of the roof's array (--rotate_mib).
std::size_t rotate_bytes = sparq_bench::default_rotation_bytes();

// The one-thread read roof (the suite runs one thread), built at its first sample: GB/s by
// thread CPU time, the median of two reads after an untimed one.
double sample_roof() {
  static sparq::thread_pool pool(1);
  static sparq_bench::roof_meter meter(pool, 1, rotate_bytes);
  double cpu_gbps = 0;
  (void)meter.measure(2, cpu_gbps);
  return cpu_gbps;
}

// The counters of a case that reads from DRAM (see the top of the file). Construct it just
// before the timed loop (it samples the roof, then starts the thread CPU clock, which is what
// Google Benchmark's rates divide by) and call report after the loop.
class dram_counters {
 public:
  dram_counters() : roof_gbps_(sample_roof()), c0_us_(sparq_bench::thread_cpu_us()) {}
  // bytes: what one iteration read.
  void report(benchmark::State& state, double bytes) const {
    const double cpu_s = (sparq_bench::thread_cpu_us() - c0_us_) * 1e-6;
    const double iters = static_cast<double>(state.iterations());
    state.SetBytesProcessed(static_cast<std::int64_t>(bytes * iters));
    state.counters["bytes_per_step"] = bytes;
    const double gbps = cpu_s > 0 ? bytes * iters / cpu_s * 1e-9 : 0.0;
    state.counters["GBps"] = gbps;
    state.counters["roof_GBps"] = roof_gbps_;
    state.counters["roof_pct"] = roof_gbps_ > 0 ? 100.0 * gbps / roof_gbps_ : 0.0;
  }

 private:
  double roof_gbps_, c0_us_;
};

struct shape {
  std::size_t batch, q_heads, kv_heads, S;
  bool operator==(const shape& o) const {
    return batch == o.batch && q_heads == o.q_heads && kv_heads == o.kv_heads && S == o.S;
  }
};

// Memory the copies of one shape's cache may take: 4 x the rotation size.
std::size_t copy_budget() { return 4 * rotate_bytes; }

// The most recently built cache of a storage type (cases are registered grouped by shape) and
// copies of it, made as the cases ask for them (ensure). Building one type's fixture frees the
// other types' (release_other_fixtures), so one shape's copies are alive at a time: at most
// copy_budget() plus the roof's array and the dense/ cases' 256 MiB.
template <class T>
struct fixture {
  using cache_t = sparq::kv_cache<T>;
  shape sh{};
  std::vector<std::unique_ptr<cache_t>> caches;  // [0] the original, then its copies
  std::vector<float> q;

  static fixture& instance() {
    static fixture f;
    return f;
  }
  static fixture& get(const shape& s);
  void clear() {
    caches.clear();
    caches.shrink_to_fit();
    q.clear();
    q.shrink_to_fit();
  }
  // How many copies a case may rotate over: copy_budget() worth, and at least 2.
  std::size_t max_copies() const {
    return std::max<std::size_t>(2, copy_budget() / caches[0]->bytes());
  }
  // Copies of caches[0] until there are n.
  void ensure(std::size_t n) {
    while (caches.size() < n) caches.push_back(std::make_unique<cache_t>(*caches[0]));
  }
};

template <class T>
void release_other_fixtures() {
  if constexpr (!std::is_same_v<T, sparq::f16>) fixture<sparq::f16>::instance().clear();
  if constexpr (!std::is_same_v<T, sparq::bf16>) fixture<sparq::bf16>::instance().clear();
  if constexpr (!std::is_same_v<T, float>) fixture<float>::instance().clear();
}

template <class T>
fixture<T>& fixture<T>::get(const shape& s) {
  release_other_fixtures<T>();
  fixture& f = instance();
  if (f.caches.empty() || !(f.sh == s)) {
    f.clear();
    f.sh = s;
    f.caches.push_back(std::make_unique<cache_t>(s.batch, s.kv_heads, s.S, d));
    std::mt19937 rng(7);
    std::normal_distribution<float> nd;
    std::vector<float> k(s.kv_heads * d), v(s.kv_heads * d);
    for (std::size_t b = 0; b < s.batch; ++b)
      for (std::size_t t = 0; t < s.S; ++t) {
        for (auto& x : k) x = nd(rng);
        for (auto& x : v) x = nd(rng);
        f.caches[0]->append(b, k.data(), v.data());
      }
    f.q.resize(s.batch * s.q_heads * d);
    for (auto& x : f.q) x = nd(rng);
  }
  return f;
}

// A step case rotates over n copies, n chosen so that one cycle of the rotation reads at
// least rotate_bytes (a SparQ step reads a small part of each copy, so a count from the
// copies' size would let its rows stay in the LLC), within max_copies(); the counter
// rotation_MiB says how much a cycle did read.
template <class T>
void bm_step(benchmark::State& state, shape s, sparq::batch_mode mode, std::size_t r,
             std::size_t k) {
  auto& fx = fixture<T>::get(s);
  sparq::config cfg;
  cfg.rank = r;
  cfg.top_k = k;
  cfg.local = k / 4;
  const std::size_t g = s.q_heads / s.kv_heads;
  sparq::batch_step<T> st(s.batch, s.kv_heads, g, s.S, d, cfg, 1, mode);
  std::vector<unsigned char> ws(st.workspace_bytes());
  std::vector<float> out(fx.q.size());
  const sparq::workspace w{ws.data(), ws.size()};

  sparq::traffic_counter tc;
  st.prepare(fx.q.data(), out.data(), *fx.caches[0], w, 1);
  for (std::size_t p = 0; p < st.phases(); ++p) st.run_phase(p, 0, 1, tc);
  const std::size_t per_step = std::max<std::size_t>(1, tc.total_bytes());
  const std::size_t wanted = (rotate_bytes + per_step - 1) / per_step;
  const std::size_t n = std::min(fx.max_copies(), std::max<std::size_t>(2, wanted));
  fx.ensure(n);

  auto one_step = [&](const sparq::kv_cache<T>& cache) {
    st.prepare(fx.q.data(), out.data(), cache, w, 1);
    for (std::size_t p = 0; p < st.phases(); ++p) st.run_phase(p, 0, 1);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  };
  for (std::size_t c = 0; c < n; ++c) one_step(*fx.caches[c]);  // untimed: first touches
  std::size_t next = 0;
  const dram_counters counters;
  for (auto _ : state) {
    one_step(*fx.caches[next]);
    next = next + 1 == n ? 0 : next + 1;
  }
  const double bytes = static_cast<double>(tc.total_bytes());
  counters.report(state, bytes);
  state.counters["rotation_MiB"] = static_cast<double>(n) * bytes / 1048576.0;
}

std::string kilo(std::size_t S) { return std::to_string(S); }

template <class T>
void add_pair(const char* dt, const char* layout, shape s, std::size_t r, std::size_t k,
              bool with_dense = true) {
  const std::string base = "/" + std::string(dt) + "/" + layout + "/B" + std::to_string(s.batch) +
                           "/S" + kilo(s.S);
  if (with_dense)
    benchmark::RegisterBenchmark(("step/dense" + base).c_str(), bm_step<T>, s,
                                 sparq::batch_mode::dense, r, k)
        ->Unit(benchmark::kMicrosecond)
        ->MinTime(0.2);
  benchmark::RegisterBenchmark(
      ("step/sparq" + base + "/r" + std::to_string(r) + "/k" + std::to_string(k)).c_str(),
      bm_step<T>, s, sparq::batch_mode::sparq, r, k)
      ->Unit(benchmark::kMicrosecond)
      ->MinTime(0.2);
}

// Scores shaped like SparQ's sel: a sum of 4 softmax distributions over n positions.
std::vector<float> sel_like(std::size_t n) {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd;
  std::vector<float> sel(n, 0.0f), e(n);
  for (int h = 0; h < 4; ++h) {
    double z = 0;
    for (auto& x : e) z += x = std::exp(2.0f * nd(rng));
    for (std::size_t i = 0; i < n; ++i) sel[i] += static_cast<float>(e[i] / z);
  }
  return sel;
}

void bm_topk_sparq(benchmark::State& state, std::size_t n, std::size_t k) {
  const auto x = sel_like(n);
  std::vector<std::uint32_t> out(n);
  std::vector<unsigned char> scratch(sparq::top_k_scratch_bytes(n));
  for (auto _ : state) {
    benchmark::DoNotOptimize(sparq::top_k(x.data(), n, k, out.data(), scratch.data()));
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(n * state.iterations()));
}

// std::nth_element / partial_sort on an index array by (value desc, index asc), then the
// chosen indices sorted ascending (what sparq::top_k returns). The index array is refilled
// with iota each iteration (part of the timed work, as a real caller must do it).
void bm_topk_std(benchmark::State& state, std::size_t n, std::size_t k, bool partial) {
  const auto x = sel_like(n);
  std::vector<std::uint32_t> idx(n);
  auto better = [&](std::uint32_t a, std::uint32_t b) {
    return x[a] > x[b] || (x[a] == x[b] && a < b);
  };
  for (auto _ : state) {
    std::iota(idx.begin(), idx.end(), 0u);
    if (partial)
      std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), better);
    else
      std::nth_element(idx.begin(), idx.begin() + (k - 1), idx.end(), better);
    std::sort(idx.begin(), idx.begin() + k);
    benchmark::DoNotOptimize(idx.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(n * state.iterations()));
}

// The cost of traffic accounting: one KV group (g = 4, f16, d = 128, S = 16k, r = 16,
// k = S/16) through sparq::step with the default policy (no_traffic: empty inline members, so
// the hooks compile to nothing) and with a traffic_counter (hashes every 64-byte line). The
// default's time is the kernel's own; the counter's extra time is what counting costs. It
// steps on the fixture's first copy only (its rows stay in the LLC): the cost of counting, not
// of DRAM.
template <class Traffic>
void bm_traffic(benchmark::State& state) {
  const shape s{1, 4, 1, 16384};
  auto& fx = fixture<sparq::f16>::get(s);  // the original only: no copies
  sparq::config cfg;
  cfg.rank = 16;
  cfg.top_k = s.S / 16;
  cfg.local = cfg.top_k / 4;
  std::vector<unsigned char> ws(sparq::step_workspace_bytes(4, s.S, d, cfg));
  std::vector<float> out(4 * d);
  Traffic traffic;
  for (auto _ : state) {
    if constexpr (Traffic::enabled) traffic.reset();
    sparq::step(fx.q.data(), 4, fx.caches[0]->head(0, 0), cfg,
                sparq::workspace{ws.data(), ws.size()}, out.data(), traffic);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
}

// The arithmetic of stage 2's kernel without its memory stalls: detail::attend_online over
// 4096 gathered rows (g = 4 heads, d = 128) drawn from a pool of 32 K/V rows that stays in
// L1, in blocks of parallel_attend_block as batch_step runs it. Reports ns per row (the
// compute floor under a gathered row's DRAM time; sparq-bench and prof-phases measure DRAM).
template <class T>
void bm_attend_hot(benchmark::State& state) {
  constexpr std::size_t g = 4, pool = 32, n = 4096;
  std::mt19937 rng(3);
  std::normal_distribution<float> nd;
  // Rows on 64-byte lines, as in a cache.
  std::vector<T, sparq::aligned_allocator<T>> k(pool * d), v(pool * d);
  for (auto& x : k) x = sparq::from_float<T>(nd(rng));
  for (auto& x : v) x = sparq::from_float<T>(nd(rng));
  std::vector<float> q(g * d);
  for (auto& x : q) x = nd(rng);
  std::vector<std::uint32_t> pos(n);
  for (std::size_t i = 0; i < n; ++i) pos[i] = static_cast<std::uint32_t>(rng() % pool);
  const sparq::rows_view<const T> kr{k.data(), pool, d, d}, vr{v.data(), pool, d, d};
  std::vector<float> st(g * d + 2 * g), p(g * sparq::detail::attend_block);
  const sparq::detail::online_state os{st.data(), st.data() + g * d, st.data() + g * d + g};
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  sparq::no_traffic nt;
  for (auto _ : state) {
    for (std::size_t b0 = 0; b0 < n; b0 += sparq::parallel_attend_block) {
      sparq::detail::online_init(os, g, d);
      sparq::detail::attend_online<d>(q.data(), g, d, scale, kr, vr,
                                      sparq::detail::indexed_positions{pos.data() + b0},
                                      std::min(sparq::parallel_attend_block, n - b0), os,
                                      p.data(), nt);
      benchmark::DoNotOptimize(st.data());
    }
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(n * state.iterations()));
  state.counters["ns_per_row"] = benchmark::Counter(
      static_cast<double>(n), benchmark::Counter::kIsIterationInvariantRate |
                                  benchmark::Counter::kInvert);
}

// dense_step over one KV head's rows (S = 65536, g = 4, f16) in three cache layouts an engine
// may hand over: packed ([H][S][d] K and V: row stride d), K|V interleaved per position (row
// stride 2d) and token-major ([S][H][d] with H = 8: row stride 8d). The 8 heads of a layout
// (256 MiB, built once) are visited 3 apart, so a head's rows were last read 7 heads (224 MiB)
// before and a token-major neighbour was not the previous head: DRAM on a machine whose L3 is
// well under that (Zen 5: 32 MiB per CCD; this VM's sysconf reports a virtual 508 MiB).
// Bytes per iteration: 2 * S * d * 2, the same in every layout (a formula here, not counted).
enum class kv_layout { packed, interleaved, token_major };
constexpr std::size_t layout_S = 65536, layout_H = 8, layout_g = 4;
using layout_view = sparq::rows_view<const sparq::f16>;
// Head h's K and V rows in layout lay (the 8 heads' 256 MiB built once, shared by the cases).
std::pair<layout_view, layout_view> layout_rows(kv_layout lay, std::size_t h) {
  using T = sparq::f16;
  constexpr std::size_t S = layout_S, H = layout_H;
  struct buffers {
    std::vector<T, sparq::aligned_allocator<T>> a, b;  // K and V, or K|V across both
    buffers() : a(H * S * d), b(H * S * d) {
      std::mt19937 rng(5);
      std::normal_distribution<float> nd;
      for (auto& x : a) x = sparq::from_float<T>(nd(rng));
      for (auto& x : b) x = sparq::from_float<T>(nd(rng));
    }
  };
  static const buffers buf;
  const T* a = buf.a.data();
  const T* b = buf.b.data();
  switch (lay) {
    case kv_layout::interleaved: {  // head h's [S][K|V] rows: heads 0-3 in a, 4-7 in b
      const T* base = (h < H / 2 ? a : b) + (h % (H / 2)) * S * 2 * d;
      return {{base, S, d, 2 * d}, {base + d, S, d, 2 * d}};
    }
    case kv_layout::token_major:
      return {{a + h * d, S, d, H * d}, {b + h * d, S, d, H * d}};
    case kv_layout::packed:
      break;
  }
  return {{a + h * S * d, S, d, d}, {b + h * S * d, S, d, d}};
}

std::vector<float> layout_queries(std::size_t n) {
  std::mt19937 rng(6);
  std::normal_distribution<float> nd;
  std::vector<float> q(n);
  for (auto& x : q) x = nd(rng);
  return q;
}

void bm_dense_layout(benchmark::State& state, kv_layout lay) {
  using T = sparq::f16;
  constexpr std::size_t S = layout_S, H = layout_H, g = layout_g;
  const std::vector<float> q = layout_queries(g * d);
  std::vector<float> out(g * d);
  std::vector<unsigned char> ws(sparq::dense_workspace_bytes(g, d));
  (void)layout_rows(lay, 0);  // builds the buffers outside the timed loop
  std::size_t h = 0;
  const dram_counters counters;
  for (auto _ : state) {
    const auto kv = layout_rows(lay, h);
    sparq::dense_step(q.data(), g, kv.first, kv.second, 0.0f,
                      sparq::workspace{ws.data(), ws.size()}, out.data());
    benchmark::DoNotOptimize(out.data());
    h = (h + 3) % H;
  }
  counters.report(state, static_cast<double>(2 * S * d * sizeof(T)));
}

// All 8 KV heads (32 query heads) of one sequence through batch_step's dense mode, which
// visits every head over one chunk of positions before the next chunk: with token-major rows
// the heads revisit the same window of tokens in turn (dense_step, one head at a time, walks
// the whole cache reading 256 of every 2048 bytes). Bytes per iteration: 8 heads x 2 * S * d
// * 2 (a formula). The 256 MiB is read in full each step, so nothing is left in the LLC
// from the previous one.
void bm_dense_batch_layout(benchmark::State& state, kv_layout lay) {
  using T = sparq::f16;
  constexpr std::size_t S = layout_S, H = layout_H, g = layout_g;
  const std::vector<float> q = layout_queries(H * g * d);
  std::vector<float> out(H * g * d);
  sparq::batch_step<T> st(1, H, g, S, d, sparq::config{}, 1, sparq::batch_mode::dense);
  std::vector<unsigned char> ws(st.workspace_bytes());
  const sparq::workspace w{ws.data(), ws.size()};
  auto view_of = [&](std::size_t, std::size_t h) {
    const auto kv = layout_rows(lay, h);
    return sparq::kv_head_view<const T>{kv.first, {}, kv.second, nullptr};
  };
  (void)layout_rows(lay, 0);  // builds the buffers outside the timed loop
  const dram_counters counters;
  for (auto _ : state) {
    st.prepare_views(q.data(), out.data(), view_of, w, 1);
    for (std::size_t p = 0; p < st.phases(); ++p) st.run_phase(p, 0, 1);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  counters.report(state, static_cast<double>(H * 2 * S * d * sizeof(T)));
}

void register_all() {
  benchmark::RegisterBenchmark("traffic/none/f16/g4/S16384", bm_traffic<sparq::no_traffic>)
      ->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("traffic/counter/f16/g4/S16384", bm_traffic<sparq::traffic_counter>)
      ->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("attend/hot/f16/g4/n4096", bm_attend_hot<sparq::f16>)
      ->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("attend/hot/f32/g4/n4096", bm_attend_hot<float>)
      ->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("dense/layout/packed/f16/g4/S65536", bm_dense_layout,
                               kv_layout::packed)
      ->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("dense/layout/kv_interleaved/f16/g4/S65536", bm_dense_layout,
                               kv_layout::interleaved)
      ->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("dense/layout/token_major8/f16/g4/S65536", bm_dense_layout,
                               kv_layout::token_major)
      ->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("dense/batch_layout/packed/f16/gqa32x8/S65536",
                               bm_dense_batch_layout, kv_layout::packed)
      ->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("dense/batch_layout/token_major8/f16/gqa32x8/S65536",
                               bm_dense_batch_layout, kv_layout::token_major)
      ->Unit(benchmark::kMicrosecond);
  const std::size_t Ks[] = {1024, 4096, 16384, 65536, 131072};
  // Main sweep: f16, GQA 32/8, batch 1.
  for (std::size_t S : Ks) add_pair<sparq::f16>("f16", "gqa32x8", {1, 32, 8, S}, 16, S / 16);
  // Storage types.
  for (std::size_t S : {std::size_t{4096}, std::size_t{16384}}) {
    add_pair<float>("f32", "gqa32x8", {1, 32, 8, S}, 16, S / 16);
    add_pair<sparq::bf16>("bf16", "gqa32x8", {1, 32, 8, S}, 16, S / 16);
  }
  // Multi-head attention, and batch 8.
  for (std::size_t S : {std::size_t{4096}, std::size_t{16384}})
    add_pair<sparq::f16>("f16", "mha32x32", {1, 32, 32, S}, 16, S / 16);
  for (std::size_t S : {std::size_t{4096}, std::size_t{16384}})
    add_pair<sparq::f16>("f16", "gqa32x8", {8, 32, 8, S}, 16, S / 16);
  // Rank and k sweep.
  for (std::size_t S : {std::size_t{16384}, std::size_t{65536}})
    for (std::size_t r : {8, 16, 32})
      for (std::size_t k : {std::size_t{64}, std::size_t{128}, S / 16})
        if (r != 16 || k != S / 16)  // that one is in the main sweep
          add_pair<sparq::f16>("f16", "gqa32x8", {1, 32, 8, S}, r, k, false);
  // Top-k alone.
  for (std::size_t k : {std::size_t{128}, std::size_t{4096}}) {
    const std::size_t n = 65536;
    const std::string tail = "/n" + std::to_string(n) + "/k" + std::to_string(k);
    benchmark::RegisterBenchmark(("topk/sparq" + tail).c_str(), bm_topk_sparq, n, k)
        ->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark(("topk/nth_element" + tail).c_str(), bm_topk_std, n, k, false)
        ->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark(("topk/partial_sort" + tail).c_str(), bm_topk_std, n, k, true)
        ->Unit(benchmark::kMicrosecond);
  }
}

// Takes --rotate_mib=N out of argv (the rest is Google Benchmark's); false on a bad value.
bool parse_rotate_mib(int& argc, char** argv) {
  const std::string flag = "--rotate_mib=";
  int out = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.rfind(flag, 0) != 0) {
      argv[out++] = argv[i];
      continue;
    }
    const char* v = argv[i] + flag.size();
    char* end = nullptr;
    errno = 0;
    const unsigned long long mib = std::strtoull(v, &end, 10);
    if (*v < '0' || *v > '9' || *end != '\0' || errno != 0 || mib < 1 || mib > (1ull << 24)) {
      std::fprintf(stderr, "%s: %s: allowed: an integer number of MiB from 1 to %llu\n", argv[0],
                   argv[i], 1ull << 24);
      return false;
    }
    rotate_bytes = static_cast<std::size_t>(mib) << 20;
  }
  argc = out;
  argv[out] = nullptr;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (!parse_rotate_mib(argc, argv)) return 2;
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
