// sparq::batch_step and sparq::thread_pool (include/sparq/parallel.hpp): the batched,
// multi-threaded decode step over a kv_cache with ragged lengths.
//  - each (sequence, KV head) equals sparq::step / dense_step within rounding, and the float64
//    oracles (ref::sparq where the selections agree, ref::dense);
//  - the output is bit-identical (memcmp) for every thread count, driven by the thread_pool
//    and by compute(ith, nth, barrier) on the test's own std::threads and barrier, both on the
//    per-item path and on the S-split path (fewer items than threads);
//  - length 0 gives zero output; prepare()/constructor errors name the argument;
//  - prepare + run allocate nothing (a global operator-new counter that lives in this test);
//  - the decode_policy constructor: per-sequence k and l from S, dense below dense_below.

#include "test_util.hpp"

#include <sparq/parallel.hpp>
#include <sparq/policy.hpp>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <thread>

#include "heap_counter.hpp"

namespace {

using namespace sparq_test;

constexpr std::size_t kD = 64;
constexpr std::size_t kMaxThreads = 8;
const std::size_t kThreadCounts[] = {1, 2, 3, 4, 7, 8};

// ---------------------------------------------------------------------------------------------
// Fixtures

/// A kv_cache of B sequences x H KV heads filled with random tokens to the given lengths, and
/// the step's queries [B][H*g][d].
template <class T>
struct batch_data {
  std::size_t B, H, g, d, cap;
  std::vector<std::size_t> lens;
  sparq::kv_cache<T> cache;
  std::vector<float> q;

  batch_data(std::vector<std::size_t> lengths, std::size_t kv_heads, std::size_t group,
             std::uint64_t seed, std::size_t capacity = 0)
      : B(lengths.size()), H(kv_heads), g(group), d(kD),
        cap(capacity ? capacity : *std::max_element(lengths.begin(), lengths.end())),
        lens(lengths), cache(B, H, std::max<std::size_t>(cap, 1), d) {
    rng r(seed);
    for (std::size_t b = 0; b < B; ++b) append(b, lens[b], r);
    q = random_queries(r, B * H * g, d, 1.0f);
  }

  void append(std::size_t b, std::size_t n, rng& r) {
    if (n == 0) return;
    const auto K = random_rows(r, n * H, d);
    const auto V = random_rows(r, n * H, d, 1.0f, 11);
    cache.append(b, n, K.data(), V.data());
  }

  const float* q_of(std::size_t b, std::size_t h) const { return q.data() + (b * H + h) * g * d; }
};

/// A spin-free barrier for the test's own threads (mutex + condition variable + generation).
class test_barrier {
 public:
  explicit test_barrier(std::size_t n) : n_(n) {}
  void wait() {
    std::unique_lock<std::mutex> lk(mu_);
    const std::size_t gen = gen_;
    if (++count_ == n_) {
      count_ = 0;
      ++gen_;
      cv_.notify_all();
      return;
    }
    cv_.wait(lk, [&] { return gen_ != gen; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::size_t n_, count_ = 0, gen_ = 0;
};

/// Runs a prepared step with nth std::threads calling compute(ith, nth, barrier).
template <class T>
void run_threads(sparq::batch_step<T>& st, std::size_t nth) {
  test_barrier bar(nth);
  std::vector<std::thread> th;
  for (std::size_t ith = 1; ith < nth; ++ith)
    th.emplace_back([&, ith] { st.compute(ith, nth, [&] { bar.wait(); }); });
  st.compute(0, nth, [&] { bar.wait(); });
  for (auto& t : th) t.join();
}

/// One step's output for nth threads, through the pool or through compute() on own threads.
template <class T>
std::vector<float> run_step(sparq::batch_step<T>& st, const batch_data<T>& data,
                            sparq::thread_pool* pool, std::size_t nth) {
  std::vector<float> out(data.B * data.H * data.g * data.d,
                         std::numeric_limits<float>::quiet_NaN());
  scratch_buffer buf(st.workspace_bytes(), 5);
  st.prepare(data.q.data(), out.data(), data.cache, buf.ws(), nth);
  if (pool) sparq::run(*pool, nth, st);
  else run_threads(st, nth);
  return out;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

std::vector<double> slice(const std::vector<double>& v, std::size_t off, std::size_t n) {
  return std::vector<double>(v.begin() + off, v.begin() + off + n);
}

/// Checks one item's output `got` ([g][d]) for the view kv of length S: zero when S = 0;
/// dense: against dense_step and ref::dense; SparQ: against sparq::step, whose selection
/// (components, positions) it stores in *sel for an oracle comparison by the caller.
template <class KV>
void check_item(const float* got, const float* q, std::size_t g, std::size_t d, const KV& kv,
                std::size_t S, bool dense, const sparq::config& cfg,
                sparq::ref::sparq_result* sel = nullptr) {
  if (S == 0) {
    for (std::size_t i = 0; i < g * d; ++i) ASSERT_EQ(got[i], 0.0f) << i;
    return;
  }
  std::vector<float> want(g * d);
  if (dense) {
    std::vector<unsigned char> ws(sparq::dense_workspace_bytes(g, d));
    sparq::dense_step(q, g, kv.k, kv.v, 0.0f, {ws.data(), ws.size()}, want.data());
    EXPECT_LT(rel_l2(got, std::vector<double>(want.begin(), want.end())), 1e-5)
        << "vs dense_step";
    const auto ref = sparq::ref::dense(q, g, kv.k, kv.v, 1.0 / std::sqrt(double(d)));
    EXPECT_LT(rel_l2(got, ref), 2e-5) << "vs ref::dense";
    return;
  }
  std::vector<unsigned char> ws(sparq::step_workspace_bytes(g, S, d, cfg));
  const auto res = sparq::step(q, g, kv, cfg, {ws.data(), ws.size()}, want.data());
  EXPECT_LT(rel_l2(got, std::vector<double>(want.begin(), want.end())), 1e-5)
      << "vs sparq::step";
  if (sel) {
    sel->positions = to_vec(res.positions, res.n_positions);
    sel->components = to_vec(res.components, res.n_components);
  }
}

/// Checks every item of `out` against sparq::step (or dense_step) and the float64 oracles.
/// cfg_of(S): the SparQ config of a sequence of length S; dense_of(S): whether it is dense.
template <class T, class CfgOf, class DenseOf>
void check_items(const batch_data<T>& data, const std::vector<float>& out, CfgOf&& cfg_of,
                 DenseOf&& dense_of, std::size_t* oracle_checked = nullptr) {
  const std::size_t g = data.g, d = data.d;
  for (std::size_t b = 0; b < data.B; ++b)
    for (std::size_t h = 0; h < data.H; ++h) {
      SCOPED_TRACE(::testing::Message() << "sequence " << b << " (S = " << data.lens[b]
                                        << ") kv head " << h << " g = " << g);
      const float* got = out.data() + (b * data.H + h) * g * d;
      const std::size_t S = data.lens[b];
      const auto kv = data.cache.head(b, h);
      const float* q = data.q_of(b, h);
      const bool dense = S > 0 && dense_of(S);
      const sparq::config cfg = S > 0 && !dense ? cfg_of(S) : sparq::config{};
      sparq::ref::sparq_result sel;
      ASSERT_NO_FATAL_FAILURE(check_item(got, q, g, d, kv, S, dense, cfg, &sel));
      if (S == 0) continue;
      if (dense) {
        if (oracle_checked) ++*oracle_checked;
        continue;
      }
      const auto ref = sparq::ref::sparq(q, g, kv, cfg);
      if (sel.positions == ref.positions && sel.components == ref.components) {
        EXPECT_LT(rel_l2(got, ref.out), 2e-5) << "vs ref::sparq";
        for (std::size_t j = 0; j < g; ++j)
          EXPECT_LT(rel_l2(got + j * d, slice(ref.out, j * d, d)), 2e-5) << "query head " << j;
        if (oracle_checked) ++*oracle_checked;
      }
    }
}

sparq::config small_cfg() {
  sparq::config c;
  c.rank = 16;
  c.top_k = 128;
  c.local = 32;
  return c;
}

// ---------------------------------------------------------------------------------------------
// The tests

template <class T>
class parallel_test : public ::testing::Test {};
TYPED_TEST_SUITE(parallel_test, storage_types, dtype_names);

// (a) + (b): ragged batch, whole items for nth <= 6 and the S-split for nth = 7, 8 (6 items).
TYPED_TEST(parallel_test, RaggedBatchMatchesStepAndOracleAndIsBitIdenticalForAnyThreadCount) {
  using T = TypeParam;
  sparq::thread_pool pool8(8), pool3(3);
  for (std::size_t g : {1, 4}) {
    SCOPED_TRACE(::testing::Message() << "g = " << g);
    batch_data<T> data({1, 700, 5000}, 2, g, 100 + g);
    const auto cfg = small_cfg();
    sparq::batch_step<T> st(data.B, data.H, g, data.cap, data.d, cfg, kMaxThreads);
    EXPECT_EQ(st.items(), 6u);
    const auto base = run_step(st, data, &pool8, 1);
    std::size_t checked = 0;
    check_items(data, base, [&](std::size_t) { return cfg; }, [](std::size_t) { return false; },
                &checked);
    EXPECT_GE(checked, 4u) << "too few items had the oracle's selections";
    for (std::size_t nth : kThreadCounts) {
      EXPECT_TRUE(same_bits(base, run_step(st, data, &pool8, nth))) << "pool(8), nth = " << nth;
      EXPECT_TRUE(same_bits(base, run_step(st, data, &pool3, nth))) << "pool(3), nth = " << nth;
      EXPECT_TRUE(same_bits(base, run_step(st, data, nullptr, nth))) << "threads, nth = " << nth;
    }
  }
}

// (c): one item split over S: 3 full chunks + 17, and k spanning several attend blocks.
TYPED_TEST(parallel_test, SplitOverSequenceIsBitIdenticalAndMatchesOracle) {
  using T = TypeParam;
  sparq::thread_pool pool(8);
  const std::size_t S = 3 * sparq::parallel_chunk + 17;
  for (std::size_t g : {1, 4}) {
    SCOPED_TRACE(::testing::Message() << "g = " << g);
    batch_data<T> data({S}, 1, g, 200 + g);
    sparq::config cfg;
    cfg.rank = 16;
    cfg.top_k = 2 * sparq::parallel_attend_block + 100;  // 3 attend blocks
    cfg.local = 100;
    sparq::batch_step<T> st(1, 1, g, S, data.d, cfg, kMaxThreads);
    const auto base = run_step(st, data, &pool, 1);
    std::size_t checked = 0;
    check_items(data, base, [&](std::size_t) { return cfg; }, [](std::size_t) { return false; },
                &checked);
    EXPECT_EQ(checked, 1u) << "selections differ from the oracle's (rounding near-tie?)";
    for (std::size_t nth : kThreadCounts) {
      EXPECT_TRUE(same_bits(base, run_step(st, data, &pool, nth))) << "pool, nth = " << nth;
      EXPECT_TRUE(same_bits(base, run_step(st, data, nullptr, nth))) << "threads, nth = " << nth;
    }
  }
}

// (d): dense mode, ragged (whole items and split) and one long sequence split over S.
TYPED_TEST(parallel_test, DenseModeMatchesDenseStepAndOracleAndIsBitIdentical) {
  using T = TypeParam;
  sparq::thread_pool pool(8);
  const auto cfg = small_cfg();
  for (std::size_t g : {1, 4}) {
    SCOPED_TRACE(::testing::Message() << "g = " << g);
    for (const auto& lens : {std::vector<std::size_t>{1, 700, 5000},
                             std::vector<std::size_t>{3 * sparq::parallel_chunk + 17}}) {
      batch_data<T> data(lens, lens.size() == 1 ? 1 : 2, g, 300 + g + lens.size());
      sparq::batch_step<T> st(data.B, data.H, g, data.cap, data.d, cfg, kMaxThreads,
                              sparq::batch_mode::dense);
      const auto base = run_step(st, data, &pool, 1);
      check_items(data, base, [&](std::size_t) { return cfg; }, [](std::size_t) { return true; });
      for (std::size_t nth : kThreadCounts) {
        EXPECT_TRUE(same_bits(base, run_step(st, data, &pool, nth))) << "pool, nth = " << nth;
        EXPECT_TRUE(same_bits(base, run_step(st, data, nullptr, nth))) << "threads, nth = " << nth;
      }
    }
  }
}

// (d2): the views may be any strided rows. A token-major copy of the cache ([S][H][d] per
// sequence: row stride H*d, KV heads d apart; the layout dense mode's chunk-major schedule is
// for) gives the same bits as the kv_cache, in dense and SparQ mode, for every thread count.
TYPED_TEST(parallel_test, TokenMajorViewsGiveTheSameBitsAsTheCache) {
  using T = TypeParam;
  sparq::thread_pool pool(8);
  const auto cfg = small_cfg();
  // 12 items (whole items for every nth) and 2 items (the S-split for nth >= 3).
  for (const auto& lens : {std::vector<std::size_t>{1, 700, 0, 2 * sparq::parallel_chunk + 300},
                           std::vector<std::size_t>{2 * sparq::parallel_chunk + 300}}) {
    SCOPED_TRACE(::testing::Message() << lens.size() << " sequences");
    batch_data<T> data(lens, lens.size() == 1 ? 2 : 3, 2, 71 + lens.size());
    const std::size_t H = data.H, d = data.d;
    std::vector<std::vector<T>> tk(data.B), tv(data.B);
    for (std::size_t b = 0; b < data.B; ++b) {
      const std::size_t S = data.lens[b];
      tk[b].resize(std::max<std::size_t>(S, 1) * H * d);
      tv[b].resize(tk[b].size());
      for (std::size_t h = 0; h < H; ++h)
        for (std::size_t s = 0; s < S; ++s) {
          std::copy_n(data.cache.keys(b, h).row(s), d, tk[b].data() + (s * H + h) * d);
          std::copy_n(data.cache.values(b, h).row(s), d, tv[b].data() + (s * H + h) * d);
        }
    }
    auto token_major = [&](std::size_t b, std::size_t h) {
      const std::size_t S = data.lens[b];
      return sparq::kv_head_view<const T>{{tk[b].data() + h * d, S, d, H * d},
                                          data.cache.keys_t(b, h),
                                          {tv[b].data() + h * d, S, d, H * d},
                                          data.cache.v_mean(b, h)};
    };
    for (auto mode : {sparq::batch_mode::dense, sparq::batch_mode::sparq}) {
      SCOPED_TRACE(mode == sparq::batch_mode::dense ? "dense" : "sparq");
      sparq::batch_step<T> st(data.B, H, data.g, data.cap, d, cfg, kMaxThreads, mode);
      const auto base = run_step(st, data, &pool, 1);
      if (mode == sparq::batch_mode::dense) {
        check_items(data, base, [&](std::size_t) { return cfg; }, [](std::size_t) { return true; });
      }
      for (std::size_t nth : kThreadCounts) {
        std::vector<float> out(base.size(), std::numeric_limits<float>::quiet_NaN());
        scratch_buffer buf(st.workspace_bytes(), 5);
        st.prepare_views(data.q.data(), out.data(), token_major, buf.ws(), nth);
        sparq::run(pool, nth, st);
        EXPECT_TRUE(same_bits(base, out)) << "nth = " << nth;
      }
    }
  }
}

// (d3): the KV heads of one sequence may have different lengths (here views over a prefix of
// each head's cache rows; their v_mean stays the cache's, which the comparison with
// sparq::step over the same view does not mind). Dense mode plans its chunk-major units from
// each sequence's longest head; SparQ mode runs whole items and, with one sequence, the
// S-split. One batch_step and one workspace (filled with 0xff bytes once) serve every round
// and thread count, with lengths that grow and shrink (the last round of the 2 x 3 batch has
// fewer chunks than the one before, so chunk states or plans left from an earlier prepare
// would show). Each item equals dense_step / sparq::step over the same view (dense also the
// float64 oracle), and the bits are the same for every thread count.
TYPED_TEST(parallel_test, HeadsOfOneSequenceMayHaveDifferentLengths) {
  using T = TypeParam;
  sparq::thread_pool pool(8);
  const std::size_t C = sparq::parallel_chunk;
  const auto cfg = small_cfg();
  const std::size_t g = 2;
  // Lengths per (sequence, head); the cache holds the longest of each sequence.
  const std::vector<std::vector<std::size_t>> rounds2x3 = {
      {2 * C + 300, 5, 0, /**/ 1, C, C + 1},
      {0, 0, 3 * C, /**/ 700, 0, 2 * C - 1},
      {40, C - 1, 2, /**/ 0, 0, 0}};
  const std::vector<std::vector<std::size_t>> rounds1x3 = {{3 * C, 1, C + 17}, {C, 2 * C + 5, 0}};
  for (auto mode : {sparq::batch_mode::dense, sparq::batch_mode::sparq}) {
    const bool dense = mode == sparq::batch_mode::dense;
    for (const auto* rounds : {&rounds2x3, &rounds1x3}) {
      const std::size_t H = 3, B = (*rounds)[0].size() / H;
      SCOPED_TRACE(::testing::Message() << (dense ? "dense" : "sparq") << ", B = " << B);
      std::vector<std::size_t> longest(B, 0);
      for (const auto& L : *rounds)
        for (std::size_t it = 0; it < L.size(); ++it)
          longest[it / H] = std::max(longest[it / H], L[it]);
      batch_data<T> data(longest, H, g, 500 + B + (dense ? 1 : 0));
      sparq::batch_step<T> st(B, H, g, data.cap, data.d, cfg, kMaxThreads, mode);
      scratch_buffer buf(st.workspace_bytes(), 7);
      std::fill(buf.buf.begin(), buf.buf.end(), static_cast<unsigned char>(0xff));
      for (std::size_t round = 0; round < rounds->size(); ++round) {
        SCOPED_TRACE(::testing::Message() << "round " << round);
        const auto& L = (*rounds)[round];
        auto view_of = [&](std::size_t b, std::size_t h) {
          auto kv = data.cache.head(b, h);
          const std::size_t S = L[b * H + h];
          kv.k.length = kv.kt.length = kv.v.length = S;
          return kv;
        };
        std::vector<float> base;
        for (std::size_t nth : kThreadCounts) {
          std::vector<float> out(B * H * g * data.d, std::numeric_limits<float>::quiet_NaN());
          st.prepare_views(data.q.data(), out.data(), view_of, buf.ws(), nth);
          sparq::run(pool, nth, st);
          if (base.empty()) base = out;
          else EXPECT_TRUE(same_bits(base, out)) << "nth = " << nth;
        }
        for (std::size_t it = 0; it < B * H; ++it) {
          SCOPED_TRACE(::testing::Message() << "item " << it << " S = " << L[it]);
          const float* got = base.data() + it * g * data.d;
          const auto kv = view_of(it / H, it % H);
          ASSERT_NO_FATAL_FAILURE(
              check_item(got, data.q.data() + it * g * data.d, g, data.d, kv, L[it], dense, cfg));
        }
      }
    }
  }
}

// (e): a sequence of length 0 gives zero output (SparQ and dense, whole items and split).
TEST(parallel, EmptySequenceGivesZeroOutput) {
  using T = float;
  sparq::thread_pool pool(4);
  for (auto mode : {sparq::batch_mode::sparq, sparq::batch_mode::dense}) {
    batch_data<T> data({0, 300, 0}, 1, 4, 400, 5000);
    sparq::batch_step<T> st(data.B, data.H, data.g, data.cap, data.d, small_cfg(), kMaxThreads,
                            mode);
    const auto base = run_step(st, data, &pool, 1);
    check_items(data, base, [](std::size_t) { return small_cfg(); },
                [&](std::size_t) { return mode == sparq::batch_mode::dense; });
    for (std::size_t nth : kThreadCounts)  // nth > 3 items: the split path
      EXPECT_TRUE(same_bits(base, run_step(st, data, &pool, nth))) << "nth = " << nth;
  }
  // Every sequence empty.
  batch_data<T> data({0, 0}, 2, 1, 401, 64);
  sparq::batch_step<T> st(2, 2, 1, 64, data.d, small_cfg(), kMaxThreads);
  for (std::size_t nth : {1, 8}) {
    const auto out = run_step(st, data, &pool, nth);
    for (float x : out) ASSERT_EQ(x, 0.0f);
  }
}

// (f): errors name the argument.
TEST(parallel, ConstructorAndPrepareErrorsNameTheArgument) {
  using T = float;
  const auto cfg = small_cfg();
  EXPECT_SPARQ_ERROR((sparq::batch_step<T>(0, 1, 1, 16, kD, cfg, 1)), "batch");
  EXPECT_SPARQ_ERROR((sparq::batch_step<T>(1, 0, 1, 16, kD, cfg, 1)), "kv_heads");
  EXPECT_SPARQ_ERROR((sparq::batch_step<T>(1, 1, 0, 16, kD, cfg, 1)), "group");
  EXPECT_SPARQ_ERROR((sparq::batch_step<T>(1, 1, 1, 0, kD, cfg, 1)), "capacity");
  EXPECT_SPARQ_ERROR((sparq::batch_step<T>(1, 1, 1, 16, 0, cfg, 1)), "head_dim");
  auto bad = cfg;
  bad.rank = kD + 1;
  EXPECT_SPARQ_ERROR((sparq::batch_step<T>(1, 1, 1, 16, kD, bad, 1)), "config.rank");
  bad = cfg;
  bad.local = cfg.top_k + 1;
  EXPECT_SPARQ_ERROR((sparq::batch_step<T>(1, 1, 1, 16, kD, bad, 1)), "config.local");
  sparq::decode_policy pol;
  pol.local_fraction = 2.0;
  EXPECT_SPARQ_ERROR((sparq::batch_step<T>(1, 1, 1, 16, kD, pol, 1)), "decode_policy.local_fraction");
  pol = {};
  pol.rank = 0;
  EXPECT_SPARQ_ERROR((sparq::batch_step<T>(1, 1, 1, 16, kD, pol, 1)), "config.rank");

  batch_data<T> data({10, 20}, 2, 2, 500, 32);
  sparq::batch_step<T> st(2, 2, 2, 32, kD, cfg, 4);
  std::vector<float> out(2 * 2 * 2 * kD);
  scratch_buffer buf(st.workspace_bytes());
  const float* q = data.q.data();
  EXPECT_SPARQ_ERROR(st.prepare(q, out.data(), data.cache, buf.ws(), 0), "nth = 0");
  EXPECT_SPARQ_ERROR(st.prepare(q, out.data(), data.cache, buf.ws(), 5), "nth = 5");
  EXPECT_SPARQ_ERROR(st.prepare(q, out.data(), data.cache, buf.ws(), 5), "max_threads (4)");
  sparq::workspace small = buf.ws();
  small.bytes = st.workspace_bytes() - 1;
  EXPECT_SPARQ_ERROR(st.prepare(q, out.data(), data.cache, small, 1), "workspace.bytes");
  EXPECT_SPARQ_ERROR(st.prepare(q, out.data(), data.cache, sparq::workspace{}, 1),
                     "workspace.data is null");
  EXPECT_SPARQ_ERROR(
      st.prepare(q, out.data(), data.cache, sparq::workspace{nullptr, st.workspace_bytes()}, 1),
      "workspace.data is null");
  EXPECT_SPARQ_ERROR(st.prepare(nullptr, out.data(), data.cache, buf.ws(), 1), "q is null");
  EXPECT_SPARQ_ERROR(st.prepare(q, nullptr, data.cache, buf.ws(), 1), "out is null");

  // A cache that does not fit the plan.
  sparq::kv_cache<T> wrong_b(3, 2, 32, kD), wrong_h(2, 1, 32, kD), wrong_d(2, 2, 32, kD / 2);
  EXPECT_SPARQ_ERROR(st.prepare(q, out.data(), wrong_b, buf.ws(), 1), "cache.batch()");
  EXPECT_SPARQ_ERROR(st.prepare(q, out.data(), wrong_h, buf.ws(), 1), "cache.kv_heads()");
  EXPECT_SPARQ_ERROR(st.prepare(q, out.data(), wrong_d, buf.ws(), 1), "cache.head_dim()");
  batch_data<T> longer({10, 40}, 2, 2, 501);
  EXPECT_SPARQ_ERROR(st.prepare(q, out.data(), longer.cache, buf.ws(), 1), "capacity (32)");
  // A view whose dim does not match.
  EXPECT_SPARQ_ERROR(st.prepare_views(q, out.data(),
                                      [&](std::size_t b, std::size_t h) {
                                        auto v = data.cache.head(b, h);
                                        v.k.dim = kD - 1;
                                        return v;
                                      },
                                      buf.ws(), 1),
                     "head_dim");
  // And it still works afterwards.
  st.prepare(q, out.data(), data.cache, buf.ws(), 2);
  EXPECT_EQ(st.threads(), 2u);
  sparq::thread_pool pool(2);
  // run() with another nth than prepare()'s: an error naming both, before any phase runs.
  EXPECT_SPARQ_ERROR(sparq::run(pool, 3, st), "nth = 3");
  EXPECT_SPARQ_ERROR(sparq::run(pool, 1, st), "given to batch_step::prepare (2)");
  sparq::run(pool, 2, st);
  check_items(data, out, [&](std::size_t) { return cfg; }, [](std::size_t) { return false; });
}

// run_phase cannot throw (noexcept, called from an engine's threads): a call before
// prepare(), or a thread count or index that does not match it, aborts with the violated
// condition instead of sending threads to scratch that was never planned.
TEST(parallelDeathTest, RunPhaseWithWrongThreadsAborts) {
  using T = float;
  const auto cfg = small_cfg();
  batch_data<T> data({10, 20}, 2, 2, 500, 32);
  sparq::batch_step<T> st(2, 2, 2, 32, kD, cfg, 4);
  std::vector<float> out(2 * 2 * 2 * kD);
  scratch_buffer buf(st.workspace_bytes());
  EXPECT_DEATH(st.run_phase(0, 0, 1), "run_phase before a successful prepare\\(\\)");
  st.prepare(data.q.data(), out.data(), data.cache, buf.ws(), 2);
  EXPECT_DEATH(st.run_phase(0, 0, 3), "nth differs from prepare\\(\\)'s nth \\(3 vs 2\\)");
  EXPECT_DEATH(st.run_phase(0, 2, 2), "ith >= nth \\(2 vs 2\\)");
  EXPECT_DEATH(st.run_phase(st.phases(), 0, 2), "phase p >= phases\\(\\)");
  // The matching calls still compute the step.
  for (std::size_t p = 0; p < st.phases(); ++p)
    for (std::size_t ith = 0; ith < 2; ++ith) st.run_phase(p, ith, 2);
  check_items(data, out, [&](std::size_t) { return cfg; }, [](std::size_t) { return false; });
  // A prepare that fails unbinds the step it replaces, whichever check fails (the cache's
  // shape, checked before any view is built; or prepare_views' own checks): run_phase aborts
  // and run() throws instead of computing the previous step's inputs again.
  batch_data<T> wrong_heads({10, 20}, 3, 2, 501, 32);
  EXPECT_SPARQ_ERROR(st.prepare(data.q.data(), out.data(), wrong_heads.cache, buf.ws(), 2),
                     "kv_heads");
  EXPECT_DEATH(st.run_phase(0, 0, 2), "run_phase before a successful prepare\\(\\)");
  EXPECT_FALSE(st.prepared());
  sparq::thread_pool pool(2);
  EXPECT_SPARQ_ERROR(sparq::run(pool, 2, st), "run: the batch_step is not prepared");
  st.prepare(data.q.data(), out.data(), data.cache, buf.ws(), 2);
  EXPECT_TRUE(st.prepared());
  EXPECT_SPARQ_ERROR(st.prepare(nullptr, out.data(), data.cache, buf.ws(), 2), "q is null");
  EXPECT_DEATH(st.run_phase(0, 0, 2), "run_phase before a successful prepare\\(\\)");
  EXPECT_SPARQ_ERROR(sparq::run(pool, 2, st), "run: the batch_step is not prepared");
}

// (g): prepare + run allocate nothing after warm-up (pool and compute on the calling thread).
TEST(parallel, StepAllocatesNothing) {
  using T = sparq::f16;
  sparq::thread_pool pool(4);
  sparq::decode_policy pol;
  pol.top_k_min = 32;
  pol.dense_below = 600;
  batch_data<T> data({1, 700, 500, 2 * sparq::parallel_chunk + 5}, 1, 4, 600);
  sparq::batch_step<T> sp(data.B, data.H, 4, data.cap, data.d, small_cfg(), 4);
  sparq::batch_step<T> de(data.B, data.H, 4, data.cap, data.d, small_cfg(), 4,
                          sparq::batch_mode::dense);
  sparq::batch_step<T> po(data.B, data.H, 4, data.cap, data.d, pol, 4);
  std::vector<float> out(data.q.size());
  for (auto* st : {&sp, &de, &po}) {
    scratch_buffer buf(st->workspace_bytes());
    for (std::size_t nth : {1, 2, 3, 4}) {  // 4 items: whole items; then the split below
      st->prepare(data.q.data(), out.data(), data.cache, buf.ws(), nth);
      sparq::run(pool, nth, *st);  // warm-up
      heap_watch w;
      for (int rep = 0; rep < 2; ++rep) {
        st->prepare(data.q.data(), out.data(), data.cache, buf.ws(), nth);
        sparq::run(pool, nth, *st);
        st->prepare(data.q.data(), out.data(), data.cache, buf.ws(), 1);
        st->compute(0, 1, [] {});
      }
      EXPECT_EQ(w.news(), 0u) << "nth = " << nth;
    }
  }
  batch_data<T> one({3 * sparq::parallel_chunk}, 1, 4, 601);
  sparq::batch_step<T> split(1, 1, 4, one.cap, one.d, small_cfg(), 4);
  std::vector<float> out1(one.q.size());
  scratch_buffer buf(split.workspace_bytes());
  split.prepare(one.q.data(), out1.data(), one.cache, buf.ws(), 4);
  sparq::run(pool, 4, split);
  heap_watch w;
  split.prepare(one.q.data(), out1.data(), one.cache, buf.ws(), 4);
  sparq::run(pool, 4, split);
  EXPECT_EQ(w.news(), 0u);
}

// ---------------------------------------------------------------------------------------------
// decode_policy: per-sequence k and l from S, dense below a threshold.

sparq::decode_policy test_policy() {
  sparq::decode_policy p;
  p.rank = 16;
  p.top_k_fraction = 1.0 / 16;
  p.top_k_min = 64;
  p.top_k_max = 400;
  p.local_fraction = 0.25;
  p.dense_below = 1000;
  return p;
}

TYPED_TEST(parallel_test, PolicyResolvesEachSequenceAndUsesDenseBelowTheThreshold) {
  using T = TypeParam;
  sparq::thread_pool pool(8);
  const auto pol = test_policy();
  auto cfg_of = [&](std::size_t S) { return pol.resolve(S); };
  auto dense_of = [&](std::size_t S) { return pol.use_dense(S); };
  for (std::size_t g : {1, 4}) {
    SCOPED_TRACE(::testing::Message() << "g = " << g);
    // 1, 700: dense; 2000: k = 125, l = 31; 7000: k = 400 (clamped), l = 100.
    batch_data<T> data({1, 700, 2000, 7000}, 2, g, 700 + g, 8000);
    sparq::batch_step<T> st(data.B, data.H, g, data.cap, data.d, pol, 12);
    EXPECT_TRUE(st.has_policy());
    const auto base = run_step(st, data, &pool, 1);
    EXPECT_TRUE(st.sequence_dense(0));
    EXPECT_TRUE(st.sequence_dense(1));
    EXPECT_FALSE(st.sequence_dense(2));
    EXPECT_EQ(st.sequence_top_k(2), 125u);
    EXPECT_EQ(st.sequence_local(2), 31u);
    EXPECT_FALSE(st.sequence_dense(3));
    EXPECT_EQ(st.sequence_top_k(3), 400u);
    EXPECT_EQ(st.sequence_local(3), 100u);
    std::size_t checked = 0;
    check_items(data, base, cfg_of, dense_of, &checked);
    EXPECT_GE(checked, 6u);
    // 8 items: whole items up to nth = 8, the mixed dense/SparQ split for 9 .. 12.
    for (std::size_t nth : {1, 2, 3, 4, 7, 8, 9, 12}) {
      EXPECT_TRUE(same_bits(base, run_step(st, data, &pool, nth))) << "pool, nth = " << nth;
      EXPECT_TRUE(same_bits(base, run_step(st, data, nullptr, nth))) << "threads, nth = " << nth;
    }
    // Lengths change between steps: sequence 1 grows past dense_below and turns SparQ, with
    // no new plan (prepare resolves it).
    rng r(800 + g);
    data.append(1, 400, r);
    data.lens[1] += 400;
    const auto grown = run_step(st, data, &pool, 3);
    EXPECT_FALSE(st.sequence_dense(1));
    EXPECT_EQ(st.sequence_top_k(1), 69u);  // llround(1100 / 16)
    check_items(data, grown, cfg_of, dense_of);
    EXPECT_TRUE(same_bits(grown, run_step(st, data, &pool, 12)));
  }
}

// The split path with a policy: a dense and a SparQ sequence together (2 items < nth), and a
// batch where every sequence is dense (the 2-phase split).
TYPED_TEST(parallel_test, PolicySplitPathMixedAndAllDense) {
  using T = TypeParam;
  sparq::thread_pool pool(8);
  auto pol = test_policy();
  const std::size_t g = 4;
  for (std::size_t dense_below : {std::size_t{1000}, std::size_t{1} << 20}) {
    pol.dense_below = dense_below;
    SCOPED_TRACE(::testing::Message() << "dense_below = " << dense_below);
    batch_data<T> data({700, 2 * sparq::parallel_chunk + 17}, 1, g, 900);
    sparq::batch_step<T> st(data.B, data.H, g, data.cap, data.d, pol, kMaxThreads);
    const auto base = run_step(st, data, &pool, 1);
    check_items(data, base, [&](std::size_t S) { return pol.resolve(S); },
                [&](std::size_t S) { return pol.use_dense(S); });
    for (std::size_t nth : kThreadCounts) {
      EXPECT_TRUE(same_bits(base, run_step(st, data, &pool, nth))) << "pool, nth = " << nth;
      EXPECT_TRUE(same_bits(base, run_step(st, data, nullptr, nth))) << "threads, nth = " << nth;
    }
  }
}

// The policy's plan covers the worst case over every length up to capacity.
TEST(parallel, PolicyWorkspaceCoversFixedConfigsOfEveryLength) {
  const auto pol = test_policy();
  const std::size_t cap = 3 * sparq::parallel_chunk;
  sparq::batch_step<float> po(2, 2, 4, cap, kD, pol, 4);
  sparq::batch_step<float> de(2, 2, 4, cap, kD, small_cfg(), 4, sparq::batch_mode::dense);
  sparq::batch_step<float> sp(2, 2, 4, cap, kD, pol.resolve(cap), 4);
  EXPECT_GE(po.workspace_bytes(), de.workspace_bytes());
  EXPECT_GE(po.workspace_bytes(), sp.workspace_bytes());
}

// thread_pool: every index runs exactly once, for nth below, at and above the pool size,
// alternating (an idle worker of one run must not pick up the next run twice).
TEST(parallel, ThreadPoolRunsEveryIndexOnce) {
  sparq::thread_pool pool(4);
  EXPECT_EQ(pool.size(), 4u);
  std::vector<std::atomic<int>> hits(16);
  for (int round = 0; round < 200; ++round) {
    const std::size_t nth = std::size_t(1) + std::size_t(round * 7) % 11;
    for (auto& h : hits) h.store(0);
    pool.run(nth, [&](std::size_t ith) { hits[ith].fetch_add(1); });
    for (std::size_t i = 0; i < hits.size(); ++i)
      ASSERT_EQ(hits[i].load(), i < nth ? 1 : 0) << "round " << round << " nth " << nth;
  }
}

}  // namespace
