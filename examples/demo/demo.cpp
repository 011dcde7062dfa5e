// sparq-demo: one SparQ step and one dense step of decode attention on synthetic data,
// printing the output error of SparQ against dense and the bytes each step reads (counted by
// sparq::traffic_counter, i.e. what the kernels actually touched).
//
// Usage: sparq-demo [--seq-len S] [--rank r] [--top-k k] [--local l] [--group g] [--dtype f32|f16|bf16]
// (S: 1..2^20, k: 1..2^20, l: 0..2^20, r: 1..128 (d), g: 1..1024; bad values exit 2, -h exits 0.)
#include <sparq/sparq.hpp>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <random>
#include <string>
#include <vector>

namespace {

struct options {
  std::size_t seq_len = 4096, rank = 16, top_k = 256, local = 64, group = 4, head_dim = 128;
  std::string dtype = "f16";
};

constexpr const char* usage_text =
    "usage: sparq-demo [--seq-len S] [--rank r] [--top-k k] [--local l] [--group g] "
    "[--dtype f32|f16|bf16]\n";
// Bounds of the numeric options; past them the demo's buffers would be absurd (S = 2^20 is
// 1.5 GiB of f32 K, Kt, V and about a minute of setup). rank is at most d; top-k and local
// are checked further by config::validate.
constexpr std::size_t max_seq_len = std::size_t{1} << 20, max_group = 1024;

[[noreturn]] void usage(const std::string& msg) {
  std::fprintf(stderr, "sparq-demo: %s\n%s", msg.c_str(), usage_text);
  std::exit(2);
}

// The value of option `name`: an unsigned decimal in [lo, hi] (digits only), else usage().
std::size_t parse_count(const std::string& name, const char* v, std::size_t lo, std::size_t hi) {
  errno = 0;
  char* end = nullptr;
  const unsigned long long n = *v >= '0' && *v <= '9' ? std::strtoull(v, &end, 10) : 0;
  if (end == nullptr || *end != '\0' || errno == ERANGE || n < lo || n > hi)
    usage(name + " " + v + ": allowed: an integer from " + std::to_string(lo) + " to " +
          std::to_string(hi));
  return static_cast<std::size_t>(n);
}

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      std::fputs(usage_text, stdout);
      std::exit(0);
    }
    if (a != "--seq-len" && a != "--rank" && a != "--top-k" && a != "--local" &&
        a != "--group" && a != "--dtype")
      usage("unknown option " + a);
    if (i + 1 >= argc) usage("missing value after " + a);
    const char* v = argv[++i];
    if (a == "--dtype") o.dtype = v;
    else if (a == "--seq-len") o.seq_len = parse_count(a, v, 1, max_seq_len);
    else if (a == "--rank") o.rank = parse_count(a, v, 1, o.head_dim);
    else if (a == "--top-k") o.top_k = parse_count(a, v, 1, max_seq_len);
    else if (a == "--local") o.local = parse_count(a, v, 0, max_seq_len);
    else o.group = parse_count(a, v, 1, max_group);
  }
  if (o.dtype != "f32" && o.dtype != "f16" && o.dtype != "bf16")
    usage("--dtype must be f32, f16 or bf16");
  return o;
}

template <class T>
int run(const options& o) {
  const std::size_t d = o.head_dim, g = o.group, S = o.seq_len;
  sparq::config cfg;
  cfg.rank = o.rank;
  cfg.top_k = o.top_k;
  cfg.local = o.local;
  cfg.validate(d);

  // Keys with a few heavy components and a query aligned with a handful of past keys, so
  // attention is peaked the way trained models' attention is.
  std::mt19937 rng(42);
  std::normal_distribution<float> normal;
  sparq::kv_cache<T> cache(1, 1, S, d);
  std::vector<float> k(d), v(d), q(g * d);
  std::vector<float> heavy(d, 1.0f);
  for (std::size_t i = 0; i < d; i += 8) heavy[i] = 4.0f;
  std::vector<float> key_at_17(d);
  for (std::size_t s = 0; s < S; ++s) {
    for (std::size_t i = 0; i < d; ++i) k[i] = normal(rng) * heavy[i], v[i] = normal(rng);
    if (s == 17) key_at_17 = k;
    cache.append(0, k.data(), v.data());
  }
  for (std::size_t h = 0; h < g; ++h)
    for (std::size_t i = 0; i < d; ++i) q[h * d + i] = 0.5f * key_at_17[i] + 0.5f * normal(rng);

  std::vector<std::byte> ws_sparq(sparq::step_workspace_bytes(g, S, d, cfg));
  std::vector<std::byte> ws_dense(sparq::dense_workspace_bytes(g, d));
  std::vector<float> y_sparq(g * d), y_dense(g * d);

  sparq::traffic_counter t_sparq, t_dense;
  const auto res = sparq::checked_step(q.data(), g, cache.head(0, 0), cfg,
                                       {ws_sparq.data(), ws_sparq.size()}, y_sparq.data(), t_sparq);
  sparq::dense_step(q.data(), g, cache.keys(0, 0), cache.values(0, 0), 0.0f,
                    sparq::workspace{ws_dense.data(), ws_dense.size()}, y_dense.data(), nullptr,
                    t_dense);

  double err = 0, norm = 0;
  for (std::size_t i = 0; i < g * d; ++i) {
    err += (y_sparq[i] - y_dense[i]) * double(y_sparq[i] - y_dense[i]);
    norm += double(y_dense[i]) * y_dense[i];
  }
  const double sb = double(t_sparq.total_bytes()), db = double(t_dense.total_bytes());
  std::printf("sparq-demo: S=%zu d=%zu group=%zu dtype=%s r=%zu k=%zu l=%zu reallocate=on\n", S, d,
              g, o.dtype.c_str(), cfg.rank, cfg.top_k, cfg.local);
  std::printf("  output relative L2 error, SparQ vs dense : %.3e\n", std::sqrt(err / norm));
  std::printf("  alpha (fetched approximate mass), head 0 : %.4f\n", res.alpha[0]);
  std::printf("  bytes read, dense step                 : %.0f (K %zu, V %zu)\n", db,
              t_dense.bytes_read(sparq::arena::k), t_dense.bytes_read(sparq::arena::v));
  std::printf("  bytes read, SparQ step                 : %.0f (Kt %zu, K %zu, V %zu, v_mean %zu)\n",
              sb, t_sparq.bytes_read(sparq::arena::kt), t_sparq.bytes_read(sparq::arena::k),
              t_sparq.bytes_read(sparq::arena::v), t_sparq.bytes_read(sparq::arena::v_mean));
  std::printf("  compression (SparQ / dense bytes)      : 1/%.2f\n", db / sb);
  std::printf("  KV memory: %zu bytes with Kt, %zu without\n", cache.bytes(),
              cache.bytes() - S * d * sizeof(T));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const options o = parse(argc, argv);
  try {
    if (o.dtype == "f32") return run<float>(o);
    if (o.dtype == "f16") return run<sparq::f16>(o);
    return run<sparq::bf16>(o);
  } catch (const sparq::error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 2;
  } catch (const std::exception& e) {  // e.g. bad_alloc: not enough memory for these sizes
    std::fprintf(stderr, "sparq-demo: %s\n", e.what());
    return 1;
  }
}
