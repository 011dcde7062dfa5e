// dhat_step: one SparQ step and one dense step over K, Kt, V (and v_mean) that live in
// SEPARATE heap blocks, each allocated by its own named function, so valgrind DHAT's
// per-allocation-site read counts map one-to-one onto sparq's arenas. Prints what
// sparq::traffic_counter counted as JSON on stdout; tests/dhat/check_dhat.py runs this under
// `valgrind --tool=dhat` and compares the two.
//
//   dhat_step <f32|f16|bf16> <g> <S> <d> <r> <k> <l>
//
// The blocks are filled by writes only (no reads of K/Kt/V/v_mean outside the two steps), so
// every byte DHAT reports as read from them was read by a step. The SparQ step and the dense
// step get their own K and V blocks for the same reason.
//
// Build for AVX2 at most (-march=x86-64-v3): valgrind 3.19 has no AVX-512.

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "sparq/sparq.hpp"
#include "sparq/workspace_buffer.hpp"

namespace {

[[gnu::noinline]] void* grab(std::size_t bytes) {
  void* p = std::malloc(bytes);
  if (p == nullptr) {
    std::fprintf(stderr, "dhat_step: out of memory (%zu bytes)\n", bytes);
    std::exit(2);
  }
  return p;
}

// One allocation site per arena. The empty asm after the call keeps each function's frame
// on the allocation stack (no sibling call into grab); its distinct immediate keeps the six
// otherwise identical functions from being folded into one (the build adds -fno-ipa-icf too).
#define SPARQ_DHAT_SITE(name, id)                        \
  [[gnu::noinline]] void* name(std::size_t bytes) {      \
    void* p = grab(bytes);                               \
    asm volatile("" : : "r"(p), "i"(id) : "memory");     \
    return p;                                            \
  }
SPARQ_DHAT_SITE(dhat_block_sparq_K, 1)
SPARQ_DHAT_SITE(dhat_block_sparq_Kt, 2)
SPARQ_DHAT_SITE(dhat_block_sparq_V, 3)
SPARQ_DHAT_SITE(dhat_block_sparq_v_mean, 4)
SPARQ_DHAT_SITE(dhat_block_dense_K, 5)
SPARQ_DHAT_SITE(dhat_block_dense_V, 6)
#undef SPARQ_DHAT_SITE

/// A cheap deterministic pseudo-normal-ish value in [-2, 2) (valgrind runs are slow; no
/// <random> machinery needed).
inline float value(std::uint64_t i, std::uint64_t salt) {
  std::uint64_t x = (i + 1) * 0x9E3779B97F4A7C15ull ^ salt * 0xD1B54A32D192ED03ull;
  x ^= x >> 29;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 32;
  return static_cast<float>(x >> 40) / static_cast<float>(1u << 24) * 4.0f - 2.0f;
}

void print_counter(const char* name, const sparq::traffic_counter& t, bool last) {
  std::printf("  \"%s\": {\n    \"read\": {", name);
  for (int a = 0; a < sparq::arena_count; ++a)
    std::printf("%s\"%s\": %zu", a ? ", " : "", sparq::arena_name(static_cast<sparq::arena>(a)),
                t.bytes_read(static_cast<sparq::arena>(a)));
  std::printf("},\n    \"written\": {");
  for (int a = 0; a < sparq::arena_count; ++a)
    std::printf("%s\"%s\": %zu", a ? ", " : "", sparq::arena_name(static_cast<sparq::arena>(a)),
                t.bytes_written(static_cast<sparq::arena>(a)));
  std::printf("},\n    \"lines\": {");
  for (int a = 0; a < sparq::arena_count; ++a)
    std::printf("%s\"%s\": %zu", a ? ", " : "", sparq::arena_name(static_cast<sparq::arena>(a)),
                t.lines_touched(static_cast<sparq::arena>(a)));
  std::printf("},\n    \"by_stage\": {");
  bool first = true;
  for (int s = 0; s < sparq::stage_count; ++s)
    for (int a = 0; a < sparq::arena_count; ++a) {
      const auto st = static_cast<sparq::stage>(s);
      const auto ar = static_cast<sparq::arena>(a);
      if (t.bytes_read(st, ar) == 0) continue;
      std::printf("%s\"%s/%s\": %zu", first ? "" : ", ", sparq::stage_name(st),
                  sparq::arena_name(ar), t.bytes_read(st, ar));
      first = false;
    }
  std::printf("}\n  }%s\n", last ? "" : ",");
}

template <class T>
int run(std::size_t g, std::size_t S, std::size_t d, const sparq::config& cfg) {
  const std::size_t n = S * d;
  T* k = static_cast<T*>(dhat_block_sparq_K(n * sizeof(T)));
  T* kt = static_cast<T*>(dhat_block_sparq_Kt(n * sizeof(T)));
  T* v = static_cast<T*>(dhat_block_sparq_V(n * sizeof(T)));
  float* vm = static_cast<float*>(dhat_block_sparq_v_mean(d * sizeof(float)));
  T* dk = static_cast<T*>(dhat_block_dense_K(n * sizeof(T)));
  T* dv = static_cast<T*>(dhat_block_dense_V(n * sizeof(T)));
  // Fill by writes only; the running mean is kept in a stack array, then stored.
  std::vector<double> mean(d, 0.0);
  for (std::size_t s = 0; s < S; ++s)
    for (std::size_t i = 0; i < d; ++i) {
      const T kx = sparq::from_float<T>(value(s * d + i, 1));
      const T vx = sparq::from_float<T>(value(s * d + i, 2));
      k[s * d + i] = kx;
      dk[s * d + i] = kx;
      kt[i * S + s] = kx;
      v[s * d + i] = vx;
      dv[s * d + i] = vx;
      mean[i] += sparq::to_float(vx);
    }
  for (std::size_t i = 0; i < d; ++i) vm[i] = static_cast<float>(mean[i] / static_cast<double>(S));

  std::vector<float> q(g * d), out(g * d);
  for (std::size_t i = 0; i < g * d; ++i) q[i] = value(i, 3);
  sparq::workspace_buffer<> ws = sparq::workspace_buffer<>::for_step(g, S, d, cfg);
  sparq::workspace_buffer<> wd = sparq::workspace_buffer<>::for_dense(g, d);
  const sparq::kv_head_view<const T> kv{{k, S, d, d}, {kt, d, S, S}, {v, S, d, d}, vm};

  sparq::traffic_counter ts, td;
  const sparq::step_result res = sparq::checked_step(q.data(), g, kv, cfg, ws, out.data(), ts);
  float checksum = 0.0f;
  for (float x : out) checksum += x;
  sparq::dense_step(q.data(), g, sparq::rows_view<const T>{dk, S, d, d},
                    sparq::rows_view<const T>{dv, S, d, d}, 0.0f, wd, out.data(), nullptr, td);
  for (float x : out) checksum += x;

  std::printf("{\n  \"dtype\": \"%s\", \"elem_bytes\": %zu, \"g\": %zu, \"S\": %zu, \"d\": %zu,"
              " \"r\": %zu, \"k\": %zu, \"l\": %zu, \"reallocate\": %s,\n",
              sparq::dtype_name(sparq::dtype_of<T>::value), sizeof(T), g, S, d, cfg.rank,
              cfg.top_k, cfg.local, cfg.reallocate ? "true" : "false");
  std::printf("  \"lanes\": %zu, \"n_positions\": %zu, \"checksum\": %.6g,\n",
              static_cast<std::size_t>(sparq::detail::lanes), res.n_positions,
              static_cast<double>(checksum));
  std::printf("  \"blocks\": {\"dhat_block_sparq_K\": %zu, \"dhat_block_sparq_Kt\": %zu,"
              " \"dhat_block_sparq_V\": %zu, \"dhat_block_sparq_v_mean\": %zu,"
              " \"dhat_block_dense_K\": %zu, \"dhat_block_dense_V\": %zu},\n",
              n * sizeof(T), n * sizeof(T), n * sizeof(T), d * sizeof(float), n * sizeof(T),
              n * sizeof(T));
  print_counter("sparq", ts, false);
  print_counter("dense", td, true);
  std::printf("}\n");
  for (void* p : {static_cast<void*>(k), static_cast<void*>(kt), static_cast<void*>(v),
                  static_cast<void*>(vm), static_cast<void*>(dk), static_cast<void*>(dv)})
    std::free(p);
  return 0;
}

std::size_t arg(char** argv, int i) {
  return static_cast<std::size_t>(std::strtoull(argv[i], nullptr, 10));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 8) {
    std::fprintf(stderr, "usage: %s <f32|f16|bf16> <g> <S> <d> <r> <k> <l>\n", argv[0]);
    return 2;
  }
  const std::string dt = argv[1];
  const std::size_t g = arg(argv, 2), S = arg(argv, 3), d = arg(argv, 4);
  sparq::config cfg;
  cfg.rank = arg(argv, 5);
  cfg.top_k = arg(argv, 6);
  cfg.local = arg(argv, 7);
  try {
    cfg.validate(d);
    if (dt == "f32") return run<float>(g, S, d, cfg);
    if (dt == "f16") return run<sparq::f16>(g, S, d, cfg);
    if (dt == "bf16") return run<sparq::bf16>(g, S, d, cfg);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dhat_step: %s\n", e.what());
    return 2;
  }
  std::fprintf(stderr, "dhat_step: dtype = %s; allowed: f32, f16, bf16\n", dt.c_str());
  return 2;
}
