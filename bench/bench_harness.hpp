#pragma once
// The measuring harness shared by sparq-bench, sparq-bench-paged, prof-phases and (the roof
// and the cache copies) sparq-bench-kernels: thread CPU time, medians, a streaming float sum,
// the last-level cache size, the CPU name, the in-process STREAM-like read roof, copies of a
// cache that together exceed the LLC and timing of a batch_step whose successive steps
// rotate over them (so every step streams from DRAM), and the pattern read (a plain read of
// a SparQ step's own bytes in its own order, rotated the same way).

#include <sparq/parallel.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstddef>
#include <cstring>
#include <cstdint>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <time.h>
#include <unistd.h>
#include <vector>

namespace sparq_bench {

/// The most threads the benchmark programs accept (--threads N: 1..max_threads).
inline constexpr std::size_t max_threads = 1024;

/// An unsigned decimal option value in [lo, hi]: digits only (no sign, no spaces, nothing
/// after them); false otherwise, `out` untouched.
inline bool parse_uint(const char* s, std::size_t lo, std::size_t hi, std::size_t& out) {
  if (s == nullptr || *s < '0' || *s > '9') return false;
  errno = 0;
  char* end = nullptr;
  const unsigned long long v = std::strtoull(s, &end, 10);
  if (errno == ERANGE || *end != '\0' || v < lo || v > hi) return false;
  out = static_cast<std::size_t>(v);
  return true;
}

/// parse_uint for option `name` of program `prog`; on failure prints
/// "prog: name value: allowed: an integer from lo to hi".
inline bool parse_uint_option(const char* prog, const char* name, const char* s, std::size_t lo,
                              std::size_t hi, std::size_t& out) {
  if (parse_uint(s, lo, hi, out)) return true;
  std::fprintf(stderr, "%s: %s %s: allowed: an integer from %zu to %zu\n", prog, name, s, lo, hi);
  return false;
}

/// The JSON file named by --json, opened for writing before anything is measured (so a bad
/// path fails at once, not after the run); null (message printed) if it cannot be.
struct file_close {
  void operator()(std::FILE* f) const noexcept { std::fclose(f); }
};
using file_ptr = std::unique_ptr<std::FILE, file_close>;
inline file_ptr open_json(const char* prog, const std::string& path) {
  file_ptr f(std::fopen(path.c_str(), "w"));
  if (!f) std::fprintf(stderr, "%s: --json %s: cannot open for writing: %s\n", prog, path.c_str(),
                       std::strerror(errno));
  return f;
}

/// Closes a JSON file from open_json; false (message printed) if writing it failed.
inline bool close_json(const char* prog, const std::string& path, file_ptr f) {
  const bool ok = !std::ferror(f.get());
  if (std::fclose(f.release()) != 0 || !ok) {
    std::fprintf(stderr, "%s: --json %s: write failed\n", prog, path.c_str());
    return false;
  }
  return true;
}

/// The command line the benchmark programs take: [--quick] [--json FILE] [--threads N]
/// (N: 1..max_threads), and [--dtype f16|f32|bf16] (the KV storage type) where the program
/// offers it.
struct options {
  bool quick = false;
  std::string json;
  std::size_t threads = std::max(1u, std::thread::hardware_concurrency());
  std::string dtype = "f16";
  int exit_code = -1;  ///< >= 0: exit with this code (usage printed)
};

inline options parse_options(int argc, char** argv, bool with_dtype = false) {
  options o;
  auto usage = [&](int code) {
    std::fprintf(code ? stderr : stdout, "usage: %s [--quick] [--json FILE] [--threads N]%s\n",
                 argv[0], with_dtype ? " [--dtype f16|f32|bf16]" : "");
    o.exit_code = code;
    return o;
  };
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool takes_value = a == "--json" || a == "--threads" || (with_dtype && a == "--dtype");
    if (takes_value && i + 1 >= argc) {
      std::fprintf(stderr, "%s: %s needs a value\n", argv[0], a.c_str());
      return usage(2);
    }
    if (a == "--quick") {
      o.quick = true;
    } else if (a == "--json") {
      o.json = argv[++i];
    } else if (a == "--threads") {
      if (!parse_uint_option(argv[0], "--threads", argv[++i], 1, max_threads, o.threads))
        return usage(2);
    } else if (with_dtype && a == "--dtype") {
      o.dtype = argv[++i];
      if (o.dtype != "f16" && o.dtype != "f32" && o.dtype != "bf16") {
        std::fprintf(stderr, "%s: --dtype %s: allowed: f16, f32, bf16\n", argv[0], o.dtype.c_str());
        o.exit_code = 2;
        return o;
      }
    } else {
      if (a != "--help" && a != "-h") std::fprintf(stderr, "%s: unknown option %s\n", argv[0], a.c_str());
      return usage(a == "--help" || a == "-h" ? 0 : 2);
    }
  }
  return o;
}

using clock_type = std::chrono::steady_clock;

inline double thread_cpu_us() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return t.tv_sec * 1e6 + t.tv_nsec * 1e-3;
}

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/// The sum of a[0, n) with four independent vector accumulators: a read loop that keeps
/// enough loads in flight to stream at the memory's pace (the roof's inner loop, and the
/// pattern reads').
inline double sum_floats(const float* a, std::size_t n) noexcept {
  std::size_t i = 0;
  double s = 0;
#if SPARQ_SIMD
  using sparq::detail::fbatch;
  constexpr std::size_t L = sparq::detail::lanes;
  fbatch s0(0.0f), s1(0.0f), s2(0.0f), s3(0.0f);
  for (; i + 4 * L <= n; i += 4 * L) {
    s0 += fbatch::load_unaligned(a + i);
    s1 += fbatch::load_unaligned(a + i + L);
    s2 += fbatch::load_unaligned(a + i + 2 * L);
    s3 += fbatch::load_unaligned(a + i + 3 * L);
  }
  for (; i + L <= n; i += L) s0 += fbatch::load_unaligned(a + i);  // short runs: still vectors
  s = sparq::detail::hsum((s0 + s1) + (s2 + s3));
#endif
  for (; i < n; ++i) s += a[i];
  return s;
}

/// The roof's read: the sum of a[0, n) (a 64-byte aligned) 4 KiB at a time with sum_floats,
/// touching one line 32 KiB ahead per 4 KiB (prefetch). The hardware prefetcher stops at each
/// 4 KiB page boundary; the touch restarts it ahead of the loads. Without it the same read
/// measured 46-52 GB/s against 64-69 with it (two threads, 1 GiB, development VM, 2026-11-25
/// 02:22 UTC; flat for touches 8-256 KiB ahead, slower with one every 2 KiB), and plain reads
/// of dense's bytes in dense's order, touched ahead as the dense kernel does, ran at 113-139%
/// of that weaker roof (02:14-02:21 UTC): it was no roof for a kernel that prefetches.
inline double read_floats(const float* a, std::size_t n) noexcept {
  constexpr std::size_t piece = 4096 / sizeof(float), ahead = 32768 / sizeof(float);
  double s = 0;
  std::size_t i = 0;
  for (; i + piece <= n; i += piece) {
    if (i + ahead < n) sparq::detail::prefetch(a + i + ahead);
    s += sum_floats(a + i, piece);
  }
  return s + sum_floats(a + i, n - i);
}

struct free_delete {
  void operator()(void* p) const noexcept { std::free(p); }
};
/// n elements of T on an `align`-byte boundary (align: a power of two >= alignof(T)), the
/// block rounded up to a multiple of align; aborts when memory runs out.
template <class T>
using aligned_array = std::unique_ptr<T[], free_delete>;
template <class T>
aligned_array<T> make_aligned_array(std::size_t n, std::size_t align) {
  const std::size_t bytes = (n * sizeof(T) + align - 1) / align * align;
  void* p = std::aligned_alloc(align, bytes);
  if (!p) std::abort();
  return aligned_array<T>(static_cast<T*>(p));
}

inline std::size_t llc_bytes() {
  long l3 = -1;
#ifdef _SC_LEVEL3_CACHE_SIZE
  l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
#endif
  return l3 > 0 ? static_cast<std::size_t>(l3) : std::size_t{64} << 20;
}

/// How much the benchmarks rotate over by default: max(floor, 2 x LLC) bytes of cache copies.
inline std::size_t default_rotation_bytes(std::size_t floor = std::size_t{1} << 30) {
  return std::max<std::size_t>(floor, 2 * llc_bytes());
}

/// `first` and copies of it (Cache's copy constructor; bytes: one copy's size), at least two
/// in all and together at least rotate_bytes, so steps that rotate over them find nothing of
/// a copy left in the last-level cache from its previous visit.
template <class Cache>
std::vector<std::unique_ptr<Cache>> clones(std::unique_ptr<Cache> first, std::size_t bytes,
                                           std::size_t rotate_bytes) {
  std::vector<std::unique_ptr<Cache>> v;
  const std::size_t copies = std::max<std::size_t>(2, (rotate_bytes + bytes - 1) / bytes);
  v.push_back(std::move(first));
  for (std::size_t c = 1; c < copies; ++c) v.push_back(std::make_unique<Cache>(*v[0]));
  return v;
}

inline std::string cpu_model() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("model name", 0) == 0) {
      const auto p = line.find(':');
      return p == std::string::npos ? line : line.substr(p + 2);
    }
  return "unknown";
}

/// The STREAM-like read roof: nth threads of `pool` sum a float array of `bytes` (allocated
/// and first-touched once, by the threads that read it) with read_floats, each thread its
/// contiguous share. measure() returns the median GB/s (1e9 B/s) of `runs` sums by wall
/// clock, and by the busiest thread's CPU time in cpu_gbps.
/// Memory bandwidth on a shared host drifts, so benchmarks sample it next to each case.
class roof_meter {
 public:
  // The array is 64-byte aligned, as sparq's caches are: a plain new[] returns an address 16
  // bytes past a page boundary for a block this large, every 64-byte load then spans two
  // lines, and the read measured ~25% slower (46-48 vs 58-64 GB/s on the development VM,
  // 2026-11-24), which made every roof fraction look better than it was.
  roof_meter(sparq::thread_pool& pool, std::size_t nth, std::size_t bytes)
      : pool_(pool),
        nth_(nth),
        n_(bytes / sizeof(float)),
        a_(make_aligned_array<float>(n_, 64)) {
    pool_.run(nth_, [&](std::size_t ith) {
      const std::size_t i0 = ith * n_ / nth_, i1 = (ith + 1) * n_ / nth_;
      for (std::size_t i = i0; i < i1; ++i) a_[i] = static_cast<float>(i & 7);
    });
  }
  std::size_t bytes() const noexcept { return n_ * sizeof(float); }

  /// Median GB/s of `runs` timed reads of the array (cpu_gbps: by the busiest thread's CPU
  /// time), after one untimed read: the first read after other work measured up to 2-4x
  /// slower than the ones after it (e.g. 8-25 GB/s, then 27-32, sparq-bench on 2026-11-24
  /// 15:05 UTC), so a one-read sample (--quick) reported half the bandwidth of the same
  /// moment's three-read median.
  double measure(int runs, double& cpu_gbps) {
    std::vector<double> sums(nth_ * 16), cpu(nth_ * 16);
    std::vector<double> gbps, gbps_cpu;
    pool_.run(nth_, [&](std::size_t ith) { sums[ith * 16] = sum_share(ith); });
    for (int r = 0; r < runs; ++r) {
      const auto t0 = clock_type::now();
      pool_.run(nth_, [&](std::size_t ith) {
        const double c0 = thread_cpu_us();
        sums[ith * 16] = sum_share(ith);
        cpu[ith * 16] = thread_cpu_us() - c0;
      });
      const double sec = std::chrono::duration<double>(clock_type::now() - t0).count();
      gbps.push_back(static_cast<double>(bytes()) / sec * 1e-9);
      double worst = 0;
      for (std::size_t i = 0; i < nth_; ++i) worst = std::max(worst, cpu[i * 16]);
      gbps_cpu.push_back(static_cast<double>(bytes()) / worst * 1e-3);
    }
    volatile double sink = 0;
    for (double x : sums) sink = sink + x;
    cpu_gbps = median(gbps_cpu);
    return median(gbps);
  }

 private:
  double sum_share(std::size_t ith) const noexcept {
    const std::size_t i0 = (ith * n_ / nth_) & ~std::size_t{63};
    const std::size_t i1 = ith + 1 == nth_ ? n_ : ((ith + 1) * n_ / nth_) & ~std::size_t{63};
    return read_floats(a_.get() + i0, i1 - i0);
  }

  sparq::thread_pool& pool_;
  std::size_t nth_, n_;
  aligned_array<float> a_;
};

/// Calls f(cache) once per copy in `caches` (warm-up: page faults, pool spin-up), then again
/// rotating to the next copy each call, at least 5 times and for `budget_s` seconds (at most
/// 5000 calls); returns the wall-clock us of each timed call.
template <class Cache, class F>
std::vector<double> time_each_rotating(const std::vector<std::unique_ptr<Cache>>& caches,
                                       double budget_s, F&& f) {
  for (const auto& c : caches) f(*c);
  std::vector<double> us;
  std::size_t c = 0;
  const auto start = clock_type::now();
  while (us.size() < 5 ||
         (us.size() < 5000 &&
          std::chrono::duration<double>(clock_type::now() - start).count() < budget_s)) {
    const auto t0 = clock_type::now();
    f(*caches[c]);
    us.push_back(std::chrono::duration<double, std::micro>(clock_type::now() - t0).count());
    c = (c + 1) % caches.size();
  }
  return us;
}

/// Times steps of `st` over `caches` (prepare + every phase on nth threads of `pool`),
/// rotating to the next copy each step, after one warm-up pass over all copies; at least 5
/// steps and `budget_s` seconds. Returns the median wall-clock us per step; cpu_us gets the
/// median critical path in thread CPU time (per phase, the busiest thread), which excludes
/// time the threads spent descheduled when other processes compete for the cores.
template <class Step, class Cache>
double time_rotating(Step& st, sparq::thread_pool& pool, std::size_t nth, const float* q,
                     float* out, const sparq::workspace& ws,
                     const std::vector<std::unique_ptr<Cache>>& caches, double budget_s,
                     double& cpu_us) {
  std::vector<double> cpu(nth * 16);
  auto one_step = [&](const Cache& cache) {
    st.prepare(q, out, cache, ws, nth);
    double crit = 0;
    for (std::size_t p = 0; p < st.phases(); ++p) {
      pool.run(nth, [&](std::size_t ith) {
        const double c0 = thread_cpu_us();
        st.run_phase(p, ith, nth);
        cpu[ith * 16] = thread_cpu_us() - c0;
      });
      double worst = 0;
      for (std::size_t i = 0; i < nth; ++i) worst = std::max(worst, cpu[i * 16]);
      crit += worst;
    }
    return crit;
  };
  std::vector<double> cus;
  const std::vector<double> us = time_each_rotating(caches, budget_s, [&](const Cache& c) {
    cus.push_back(one_step(c));
  });
  cus.erase(cus.begin(), cus.begin() + static_cast<std::ptrdiff_t>(caches.size()));  // warm-up
  cpu_us = median(cus);
  return median(us);
}

/// What one SparQ step of one KV head read: the r Kt rows it chose (stage 1) and the positions
/// whose K and V rows it fetched (stage 2), as sparq::step reports them.
struct head_pattern {
  std::vector<std::uint32_t> dims, positions;
};

/// The pattern read of a SparQ step: a plain read of the bytes the step's kernels read from
/// the cache, in about the step's order, with no arithmetic beyond a float sum. Per KV head:
/// stage 1's r Kt rows interleaved as approximate_logits reads them (64 positions of each row
/// in turn, a hint 1 KiB ahead in each), then the K and V rows at the chosen positions in
/// blocks of parallel_attend_block as batch_step hands them to stage 2 (per 16 rows: K rows,
/// then V rows; every line prefetched 32 rows ahead within the block). Not replayed: scratch
/// traffic (the logits, written and read back), which traffic_counter does not count either.
/// Scattered rows are served slower than a stream; this measures how much slower on this
/// machine. A yardstick, not a bound: a kernel that keeps more loads in flight can beat it.
/// Batch 1, a contiguous kv_cache; heads [ith*H/nth, (ith+1)*H/nth) on thread ith, as
/// batch_step gives whole items (with nth > H it splits S instead, and threads sit idle here).
/// Adds the bytes read to `bytes`.
template <class Cache>
double read_pattern(const Cache& cache, const std::vector<head_pattern>& pat, std::size_t ith,
                    std::size_t nth, std::size_t& bytes) {
  double s = 0;
  auto sum = [&](const void* p, std::size_t n) {
    bytes += n;
    return sum_floats(static_cast<const float*>(p), n / sizeof(float));
  };
  const std::size_t H = pat.size();
  for (std::size_t h = ith * H / nth; h < (ith + 1) * H / nth; ++h) {
    const auto kv = cache.head(0, h);
    using T = typename decltype(kv.k)::element_type;
    static_assert(sizeof(T) == 2 || sizeof(T) == 4, "f16, bf16 or float");
    constexpr std::size_t chunk = 64;  // positions per row per turn (approx_chunk, 16 lanes x 4)
    const std::size_t S = kv.kt.length;
    for (std::size_t s0 = 0; s0 < S; s0 += chunk) {
      const std::size_t n = (S - s0 < chunk ? S - s0 : chunk) * sizeof(T);
      for (const std::uint32_t i : pat[h].dims) {
        const char* row = reinterpret_cast<const char*>(kv.kt.dim_row(i) + s0);
        for (std::size_t o = 0; o < n; o += 64) sparq::detail::prefetch(row + 1024 + o);
        if (n % sizeof(float) == 0) {
          s += sum(row, n);
        } else {  // an odd f16/bf16 tail: the last element on its own
          s += sum(row, n - 2);
          bytes += 2;
          s += row[n - 1];
        }
      }
    }
    const std::size_t row_bytes = kv.k.dim * sizeof(T);
    const auto& pos = pat[h].positions;
    constexpr std::size_t pf = 32;
    auto fetch = [&](std::size_t j) {
      const char* kr = reinterpret_cast<const char*>(kv.k.row(pos[j]));
      const char* vr = reinterpret_cast<const char*>(kv.v.row(pos[j]));
      for (std::size_t o = 0; o < row_bytes; o += 64) {
        sparq::detail::prefetch(kr + o);
        sparq::detail::prefetch(vr + o);
      }
    };
    for (std::size_t a0 = 0; a0 < pos.size(); a0 += sparq::parallel_attend_block) {
      const std::size_t a1 = std::min(pos.size(), a0 + sparq::parallel_attend_block);
      for (std::size_t j = a0; j < a0 + pf && j < a1; ++j) fetch(j);
      for (std::size_t b = a0; b < a1; b += 16) {
        const std::size_t e = std::min(a1, b + 16);
        for (std::size_t j = b + pf; j < e + pf && j < a1; ++j) fetch(j);
        for (std::size_t j = b; j < e; ++j) s += sum(kv.k.row(pos[j]), row_bytes);
        for (std::size_t j = b; j < e; ++j) s += sum(kv.v.row(pos[j]), row_bytes);
      }
    }
    s += sum(kv.v_mean, kv.k.dim * sizeof(float));
  }
  return s;
}

/// The pattern read of a dense step (batch_step's batch_mode::dense, batch 1, a contiguous
/// kv_cache): every K and V row once, in the step's order, as a plain loop with no attention
/// arithmetic. Units (chunk c of parallel_chunk positions, KV head h), chunk-major, split into
/// nth contiguous ranges as run_dense_phase splits them; per unit 16 K rows, then 16 V rows,
/// prefetched as the blocked kernels (detail::fill_rows) prefetch contiguous rows (one line
/// per 4 KiB of K and of V about 32 KiB ahead; each row's lines 16 rows ahead, one row per row
/// read; the generic loop for other head dims prefetches none of this). What dense's
/// bytes cost in dense's order without its arithmetic; a kernel whose arithmetic hid under
/// its loads would run at this speed. Needs rows of a multiple of 4 bytes (d even at f16 and
/// bf16; sparq-bench's d = 128). Adds the bytes read to `bytes`.
template <class Cache>
double read_dense_pattern(const Cache& cache, std::size_t ith, std::size_t nth,
                          std::size_t& bytes) {
  double s = 0;
  const std::size_t H = cache.kv_heads();
  const std::size_t S = cache.head(0, 0).k.length;
  const std::size_t C = (S + sparq::parallel_chunk - 1) / sparq::parallel_chunk, U = C * H;
  for (std::size_t u = ith * U / nth; u < (ith + 1) * U / nth; ++u) {
    const auto kv = cache.head(0, u % H);
    using T = typename decltype(kv.k)::element_type;
    const std::size_t row_bytes = kv.k.dim * sizeof(T);
    const std::size_t cf = sparq::detail::contiguous_hint_rows(row_bytes);
    constexpr std::size_t pd = sparq::detail::contiguous_prefetch_rows;
    const std::size_t hint = sparq::detail::contiguous_hint_every(row_bytes);
    const std::size_t s0 = u / H * sparq::parallel_chunk;
    const std::size_t n = std::min(sparq::parallel_chunk, S - s0);
    auto rows = [&](const auto& m, std::size_t b, std::size_t nb) {  // and pd rows ahead
      for (std::size_t j = 0; j < nb; ++j) {
        sparq::detail::prefetch_lines(m.row(s0 + (b + pd + j < n ? b + pd + j : b)), row_bytes);
        s += sum_floats(reinterpret_cast<const float*>(m.row(s0 + b + j)), row_bytes / 4);
      }
    };
    for (std::size_t b = 0; b < n; b += 16) {
      const std::size_t nb = std::min<std::size_t>(16, n - b);
      if (b + cf + 16 <= n)
        for (std::size_t j = 0; j < 16; j += hint) {
          sparq::detail::prefetch(kv.k.row(s0 + b + cf + j));
          sparq::detail::prefetch(kv.v.row(s0 + b + cf + j));
        }
      rows(kv.k, b, nb);
      rows(kv.v, b, nb);
      bytes += 2 * nb * row_bytes;
    }
  }
  return s;
}

/// Median wall-clock us of read(cache, ith, nth, bytes) (read_pattern, read_dense_pattern) on
/// nth threads of `pool`, rotating over `caches` (time_each_rotating, as time_rotating does).
/// bytes: what one read reads (all threads), for checking against traffic_counter.
template <class Cache, class Read>
double time_read(sparq::thread_pool& pool, std::size_t nth,
                 const std::vector<std::unique_ptr<Cache>>& caches, double budget_s,
                 std::size_t& bytes, Read&& read) {
  std::vector<double> sums(nth * 16);
  std::vector<std::size_t> counted(nth * 16);
  auto one = [&](const Cache& c) {
    pool.run(nth, [&](std::size_t ith) {
      counted[ith * 16] = 0;
      sums[ith * 16] += read(c, ith, nth, counted[ith * 16]);
    });
  };
  const std::vector<double> us = time_each_rotating(caches, budget_s, one);
  bytes = 0;
  for (std::size_t i = 0; i < nth; ++i) bytes += counted[i * 16];
  volatile double sink = 0;
  for (const double x : sums) sink = sink + x;
  return median(us);
}

}  // namespace sparq_bench
