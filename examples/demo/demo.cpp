// sparq-demo: one SparQ step and one dense step of decode attention on synthetic data,
// printing the output error of SparQ against dense and the bytes each step reads (counted by
// sparq::traffic_counter, i.e. what the kernels actually touched).
//
// Usage: sparq-demo [--seq-len S] [--rank r] [--top-k k] [--local l] [--group g] [--dtype f32|f16|bf16]
#include <sparq/sparq.hpp>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace {

struct options {
  std::size_t seq_len = 4096, rank = 16, top_k = 256, local = 64, group = 4, head_dim = 128;
  std::string dtype = "f16";
};

[[noreturn]] void usage(const char* msg) {
  std::fprintf(stderr, "sparq-demo: %s\nusage: sparq-demo [--seq-len S] [--rank r] [--top-k k] "
               "[--local l] [--group g] [--dtype f32|f16|bf16]\n", msg);
  std::exit(2);
}

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) usage(("missing value after " + a).c_str());
    const char* v = argv[++i];
    char* end = nullptr;
    const unsigned long n = std::strtoul(v, &end, 10);
    const bool numeric = end && *end == '\0' && end != v;
    if (a == "--dtype") o.dtype = v;
    else if (!numeric) usage(("expected a number after " + a).c_str());
    else if (a == "--seq-len") o.seq_len = n;
    else if (a == "--rank") o.rank = n;
    else if (a == "--top-k") o.top_k = n;
    else if (a == "--local") o.local = n;
    else if (a == "--group") o.group = n;
    else usage(("unknown option " + a).c_str());
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
  }
}
