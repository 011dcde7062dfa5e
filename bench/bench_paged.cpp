// sparq-bench-paged: what paging costs. The same decode steps as sparq-bench (d = 128,
// 32 query / 8 KV heads, f16, batch 1, r = 16, k = S/16, l = k/4, dense and SparQ through
// sparq::batch_step on --threads threads) over a contiguous kv_cache and over
// paged_kv_caches with page sizes P in {16, 64, 256} whose pages are scattered through the
// pool (shuffled free list, as in a long-running server). Every cache holds the same tokens,
// and the outputs are checked bit-identical before timing.
//
// Method (as sparq-bench, bench/bench_harness.hpp): each cache is cloned until the copies
// exceed twice the LLC and steps rotate over the copies (DRAM, not cache); medians of
// wall-clock steps; the paged and contiguous cases of one S are interleaved over rounds so
// drift hits them alike. Reported: us per step and the ratio paged / contiguous.
//
// Usage: sparq-bench-paged [--quick] [--threads N] [--json FILE]
// (N: 1..1024; FILE is opened before anything is measured; bad values exit 2.)

#include "bench_harness.hpp"

#include <sparq/paged_kv_cache.hpp>
#include <sparq/parallel.hpp>
#include <sparq/sparq.hpp>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace sparq_bench;
using T = sparq::f16;
constexpr std::size_t d = 128, q_heads = 32, kv_heads = 8, g = q_heads / kv_heads, rank = 16;
using flat_cache = sparq::kv_cache<T>;
using paged_cache = sparq::paged_kv_cache<T>;
using paged_step = sparq::batch_step<T, sparq::paged_kv_head_view<const T>>;

/// The tokens of the benchmark: [S][kv_heads][d] keys and values, fixed seed.
struct tokens {
  std::vector<float> k, v;
  explicit tokens(std::size_t S) : k(S * kv_heads * d), v(S * kv_heads * d) {
    std::mt19937 rng(42);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (auto& x : k) x = nd(rng);
    for (auto& x : v) x = nd(rng);
  }
};

struct row {
  std::size_t S = 0, P = 0;
  double dense_us = 0, sparq_us = 0;            // paged
  double flat_dense_us = 0, flat_sparq_us = 0;  // contiguous, same rounds
};

}  // namespace

int main(int argc, char** argv) {
  const options opt = parse_options(argc, argv);
  if (opt.exit_code >= 0) return opt.exit_code;
  const bool quick = opt.quick;
  const std::string json = opt.json;
  const std::size_t nth = opt.threads;
  // --json: opened now, so a path that cannot be written fails before the run, not after it.
  file_ptr json_file;
  if (!json.empty() && !(json_file = open_json(argv[0], json))) return 2;
  sparq::thread_pool pool(nth);
  const std::size_t rotate = default_rotation_bytes(std::size_t{256} << 20);
  const double budget = quick ? 0.2 : 1.0;
  const int rounds = quick ? 1 : 3;
  std::printf("sparq-bench-paged: contiguous vs paged KV (scattered pages), batch 1, d = %zu, "
              "%zu/%zu heads, f16, r = %zu, k = S/16, l = k/4\ncpu: %s, %zu thread(s); caches "
              "rotated over >= %.0f MiB\n\n",
              d, q_heads, kv_heads, rank, cpu_model().c_str(), nth, rotate / 1048576.0);
  std::printf("%7s %6s | %10s %10s | %10s %10s | %8s %8s\n", "S", "P", "flat_dns", "flat_spq",
              "paged_dns", "paged_spq", "dense_x", "sparq_x");

  std::vector<row> rows;
  const std::vector<std::size_t> lengths =
      quick ? std::vector<std::size_t>{16384} : std::vector<std::size_t>{16384, 65536};
  for (std::size_t S : lengths) {
    const tokens tk(S);
    sparq::config cfg;
    cfg.rank = rank;
    cfg.top_k = S / 16;
    cfg.local = cfg.top_k / 4;
    std::vector<float> q(q_heads * d);
    {
      std::mt19937 rng(7);
      std::normal_distribution<float> nd(0.0f, 1.0f);
      std::uniform_int_distribution<std::size_t> pick(0, S - 1);
      for (std::size_t h = 0; h < q_heads; ++h)
        for (int t = 0; t < 4; ++t) {  // peaked: aimed at a few cached keys, plus noise
          const float* kr = tk.k.data() + (pick(rng) * kv_heads + h / g) * d;
          for (std::size_t i = 0; i < d; ++i) q[h * d + i] += 0.5f * kr[i] + 0.1f * nd(rng);
        }
    }
    auto flat0 = std::make_unique<flat_cache>(1, kv_heads, S, d);
    flat0->append(0, S, tk.k.data(), tk.v.data());
    const std::size_t bytes = flat0->bytes();
    const auto flat = clones(std::move(flat0), bytes, rotate);

    sparq::batch_step<T> fs(1, kv_heads, g, S, d, cfg, nth, sparq::batch_mode::sparq);
    sparq::batch_step<T> fd(1, kv_heads, g, S, d, cfg, nth, sparq::batch_mode::dense);
    paged_step ps(1, kv_heads, g, S, d, cfg, nth, sparq::batch_mode::sparq);
    paged_step pd(1, kv_heads, g, S, d, cfg, nth, sparq::batch_mode::dense);
    std::vector<unsigned char> w(std::max({fs.workspace_bytes(), fd.workspace_bytes(),
                                           ps.workspace_bytes(), pd.workspace_bytes()}));
    const sparq::workspace ws{w.data(), w.size()};
    std::vector<float> want_s(q.size()), want_d(q.size()), out(q.size());
    double cpu = 0;
    time_rotating(fs, pool, nth, q.data(), want_s.data(), ws, flat, 0.0, cpu);
    time_rotating(fd, pool, nth, q.data(), want_d.data(), ws, flat, 0.0, cpu);

    for (std::size_t P : {std::size_t{16}, std::size_t{64}, std::size_t{256}}) {
      const std::size_t pages = (S + P - 1) / P;
      auto p0 = std::make_unique<paged_cache>(1, kv_heads, pages + 16, P, d);
      p0->shuffle_free_pages(P);
      p0->append(0, S, tk.k.data(), tk.v.data());
      const auto paged = clones(std::move(p0), bytes, rotate);
      // Same bits as contiguous, or the timing means nothing.
      time_rotating(ps, pool, nth, q.data(), out.data(), ws, paged, 0.0, cpu);
      const bool s_ok = std::memcmp(out.data(), want_s.data(), out.size() * 4) == 0;
      time_rotating(pd, pool, nth, q.data(), out.data(), ws, paged, 0.0, cpu);
      const bool d_ok = std::memcmp(out.data(), want_d.data(), out.size() * 4) == 0;
      if (!s_ok || !d_ok) {
        std::fprintf(stderr, "sparq-bench-paged: paged output differs from contiguous (S=%zu P=%zu)\n",
                     S, P);
        return 1;
      }
      std::vector<double> fd_us, fs_us, pd_us, ps_us;
      for (int r = 0; r < rounds; ++r) {
        fd_us.push_back(time_rotating(fd, pool, nth, q.data(), out.data(), ws, flat, budget, cpu));
        pd_us.push_back(time_rotating(pd, pool, nth, q.data(), out.data(), ws, paged, budget, cpu));
        fs_us.push_back(time_rotating(fs, pool, nth, q.data(), out.data(), ws, flat, budget, cpu));
        ps_us.push_back(time_rotating(ps, pool, nth, q.data(), out.data(), ws, paged, budget, cpu));
      }
      rows.push_back({S, P, median(pd_us), median(ps_us), median(fd_us), median(fs_us)});
      const row& x = rows.back();
      std::printf("%7zu %6zu | %10.1f %10.1f | %10.1f %10.1f | %7.2fx %7.2fx\n", S, P,
                  x.flat_dense_us, x.flat_sparq_us, x.dense_us, x.sparq_us,
                  x.dense_us / x.flat_dense_us, x.sparq_us / x.flat_sparq_us);
      std::fflush(stdout);
    }
  }
  std::printf("\ndense_x / sparq_x: paged time / contiguous time measured in the same rounds "
              "(> 1: paging costs).\n");
  if (!json.empty()) {
    std::FILE* f = json_file.get();
    std::fprintf(f, "{\"threads\": %zu, \"cpu\": \"%s\", \"cases\": [", nth, cpu_model().c_str());
    for (std::size_t i = 0; i < rows.size(); ++i)
      std::fprintf(f, "%s\n  {\"seq_len\": %zu, \"page_size\": %zu, \"dense_us\": %.3f, "
                   "\"sparq_us\": %.3f, \"flat_dense_us\": %.3f, \"flat_sparq_us\": %.3f}",
                   i ? "," : "", rows[i].S, rows[i].P, rows[i].dense_us, rows[i].sparq_us,
                   rows[i].flat_dense_us, rows[i].flat_sparq_us);
    std::fprintf(f, "\n]}\n");
    if (!close_json(argv[0], json, std::move(json_file))) return 1;
  }
  return 0;
}
