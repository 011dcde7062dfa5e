// Paged KV (include/sparq/paged_view.hpp, paged_kv_cache.hpp): views through a block table.
//  - paged_rows_view / paged_cols_view address the same elements as the formulas in the docs;
//  - a paged_kv_cache with scattered pages and a contiguous kv_cache filled with the same
//    tokens give bit-identical results (memcmp) for step, dense_step, attend_positions with
//    external indices and batch_step (ragged, 1 and 2 threads, split and per-item paths), for
//    f32/f16/bf16, page sizes 1/16/64 and lengths that end mid-page; the paged step is also
//    checked against the float64 oracle (ref::sparq);
//  - traffic counters see the same bytes per arena through either view;
//  - page_pool's HND and NHD factories, page_table lengths and validation, the cache's page
//    accounting (append takes pages, reset returns them, overflow throws before writing);
//  - errors name the argument (checked_step, checked_dense_step, page_table, page_pool).

#include "test_util.hpp"

#include <sparq/paged_kv_cache.hpp>
#include <sparq/paged_view.hpp>
#include <sparq/parallel.hpp>

#include <cstring>

namespace {

using namespace sparq_test;

template <class T>
class Paged : public ::testing::Test {};
TYPED_TEST_SUITE(Paged, storage_types, dtype_names);

bool same_bits(const float* a, const float* b, std::size_t n) {
  return std::memcmp(a, b, n * sizeof(float)) == 0;
}

/// The same random tokens in a contiguous kv_cache and in a paged_kv_cache whose free list
/// is shuffled (pages scattered through the pool), for B sequences of the given lengths.
template <class T>
struct twin_caches {
  std::size_t H, d, P;
  std::vector<std::size_t> lens;
  sparq::kv_cache<T> flat;
  sparq::paged_kv_cache<T> paged;

  twin_caches(std::vector<std::size_t> lengths, std::size_t kv_heads, std::size_t head_dim,
              std::size_t page_size, std::uint64_t seed)
      : H(kv_heads), d(head_dim), P(page_size), lens(lengths),
        flat(lengths.size(), kv_heads, std::max<std::size_t>(1, max_len(lengths)), head_dim),
        paged(lengths.size(), kv_heads, pages_for(lengths, page_size) + 3, page_size, head_dim) {
    paged.shuffle_free_pages(seed);
    rng r(seed);
    // Interleave the sequences' appends a few tokens at a time, as a server does, so pages
    // of different sequences alternate in the pool.
    std::vector<std::size_t> done(lens.size(), 0);
    for (bool more = true; more;) {
      more = false;
      for (std::size_t b = 0; b < lens.size(); ++b) {
        const std::size_t n = std::min<std::size_t>(lens[b] - done[b], 1 + r.index(40));
        if (n == 0) continue;
        const auto K = random_rows(r, n * H, d);
        const auto V = random_rows(r, n * H, d, 1.0f, 11);
        flat.append(b, n, K.data(), V.data());
        paged.append(b, n, K.data(), V.data());
        done[b] += n;
        more = more || done[b] < lens[b];
      }
    }
  }
  static std::size_t max_len(const std::vector<std::size_t>& l) {
    return *std::max_element(l.begin(), l.end());
  }
  static std::size_t pages_for(const std::vector<std::size_t>& l, std::size_t P) {
    std::size_t n = 0;
    for (std::size_t s : l) n += (s + P - 1) / P;
    return n;
  }
};

// ---------------------------------------------------------------------------------------------
// Addressing

TEST(PagedView, RowsAndColumnsFollowTheDocumentedFormulas) {
  const std::size_t P = 4, d = 3, npages = 5;
  std::vector<float> pool(npages * 8 * 10), ktpool(npages * 100);
  for (std::size_t i = 0; i < pool.size(); ++i) pool[i] = float(i);
  for (std::size_t i = 0; i < ktpool.size(); ++i) ktpool[i] = float(i);
  const std::int32_t pages[] = {3, 0, 4};
  const std::size_t S = 10;  // two full pages and 2 of 4 in the last
  const sparq::paged_rows_view<const float> k{pool.data(), pages, S, d, 2, 40, 8};
  for (std::size_t s = 0; s < S; ++s)
    EXPECT_EQ(k.row(s), pool.data() + pages[s / P] * 40 + (s % P) * 8) << s;
  const sparq::paged_cols_view<const float> kt{ktpool.data(), pages, d, S, 2, 100, 6};
  EXPECT_EQ(kt.page_count(), 3u);
  for (std::size_t p = 0; p < 3; ++p) {
    const auto c = kt.page(p);
    EXPECT_EQ(c.length, p < 2 ? P : 2u);
    EXPECT_EQ(c.dim_stride, 6u);
    for (std::size_t i = 0; i < d; ++i)
      EXPECT_EQ(c.dim_row(i), ktpool.data() + pages[p] * 100 + i * 6) << p << " " << i;
  }
}

TEST(PagedView, PoolFactoriesMatchTheirLayouts) {
  const std::size_t H = 3, d = 4, P = 8, h = 2;
  std::vector<float> buf(10 * H * P * d);
  const std::int32_t pages[] = {7, 2};
  const std::int32_t indptr[] = {0, 2}, last[] = {5};
  const sparq::page_table t{indptr, pages, last, 1, P, 10};
  EXPECT_EQ(t.length(0), 13u);
  auto hnd = sparq::page_pool<const float>::hnd(buf.data(), buf.data(), buf.data(), H, d, P);
  auto nhd = sparq::page_pool<const float>::nhd(buf.data(), buf.data(), buf.data(), H, d, P);
  const auto a = hnd.head(t, 0, h, nullptr), b = nhd.head(t, 0, h, nullptr);
  for (std::size_t s = 0; s < 13; ++s) {
    const std::size_t pg = pages[s / P], slot = s % P;
    EXPECT_EQ(a.k.row(s), buf.data() + ((pg * H + h) * P + slot) * d);  // [page][head][P][d]
    EXPECT_EQ(b.k.row(s), buf.data() + ((pg * P + slot) * H + h) * d);  // [page][P][head][d]
    for (std::size_t i = 0; i < d; ++i) {  // Kt [page][head][d][P] in both
      const auto c = a.kt.page(s / P);
      EXPECT_EQ(c.dim_row(i) + slot, buf.data() + ((pg * H + h) * d + i) * P + slot);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Same results through either view

TYPED_TEST(Paged, StepDenseAndAttendAreBitIdenticalToContiguous) {
  using T = TypeParam;
  const std::size_t H = 2, g = 4, d = 64;
  for (std::size_t P : {1u, 16u, 64u}) {
    const std::vector<std::size_t> lens = {1, 37, 1000, 3001};
    twin_caches<T> c(lens, H, d, P, 100 + P);
    rng r(7 + P);
    int oracle_checks = 0;
    for (std::size_t b = 0; b < lens.size(); ++b)
      for (std::size_t h = 0; h < H; ++h) {
        const std::size_t S = lens[b];
        SCOPED_TRACE("P=" + std::to_string(P) + " S=" + std::to_string(S) + " h=" + std::to_string(h));
        const auto q = random_queries(r, g, d, 2.0f);
        const auto fv = c.flat.head(b, h);
        const auto pv = c.paged.head(b, h);
        ASSERT_EQ(pv.length(), S);
        for (const sparq::config cfg :
             {sparq::config{8, 64, 16}, sparq::config{16, 5, 2}, sparq::config{4, 2000, 100, false}}) {
          if (cfg.local > cfg.top_k) continue;
          const std::size_t ws = sparq::step_workspace_bytes(g, S, d, cfg);
          scratch_buffer b1(ws), b2(ws);
          std::vector<float> o1(g * d), o2(g * d);
          const auto r1 = sparq::step<T>(q.data(), g, fv, cfg, b1.ws(), o1.data());
          const auto r2 = sparq::checked_step<T>(q.data(), g, pv, cfg, b2.ws(), o2.data());
          EXPECT_TRUE(same_bits(o1.data(), o2.data(), g * d));
          ASSERT_EQ(r1.n_positions, r2.n_positions);
          EXPECT_EQ(to_vec(r1.positions, r1.n_positions), to_vec(r2.positions, r2.n_positions));
          EXPECT_TRUE(same_bits(r1.alpha, r2.alpha, g));
          EXPECT_TRUE(same_bits(r1.lse, r2.lse, g));
          // And against the float64 oracle where the selections agree.
          const auto ref = sparq::ref::sparq<T>(q.data(), g, fv, cfg);
          if (ref.positions == to_vec(r2.positions, r2.n_positions)) {
            EXPECT_LT(rel_l2(o2.data(), ref.out), 2e-5);
            ++oracle_checks;
          }
        }
        // Dense and external indices (every third position, plus the last).
        scratch_buffer db(sparq::dense_workspace_bytes(g, d));
        std::vector<float> o1(g * d), o2(g * d), l1(g), l2(g);
        sparq::dense_step<T>(q.data(), g, fv.k, fv.v, 0.0f, db.ws(), o1.data(), l1.data());
        sparq::checked_dense_step<T>(q.data(), g, pv.k, pv.v, 0.0f, db.ws(), o2.data(), l2.data());
        EXPECT_TRUE(same_bits(o1.data(), o2.data(), g * d));
        EXPECT_TRUE(same_bits(l1.data(), l2.data(), g));
        std::vector<std::uint32_t> idx;
        for (std::uint32_t s = 0; s < S; s += 3) idx.push_back(s);
        if (idx.back() != S - 1) idx.push_back(static_cast<std::uint32_t>(S - 1));
        std::vector<float> sc(sparq::attend_scratch_floats(g, d));
        const float scale = 1.0f / std::sqrt(float(d));
        sparq::attend_positions<T>(q.data(), g, fv.k, fv.v, idx.data(), idx.size(), scale,
                                   sc.data(), o1.data(), l1.data());
        sparq::attend_positions<T>(q.data(), g, pv.k, pv.v, idx.data(), idx.size(), scale,
                                   sc.data(), o2.data(), l2.data());
        EXPECT_TRUE(same_bits(o1.data(), o2.data(), g * d));
        EXPECT_TRUE(same_bits(l1.data(), l2.data(), g));
      }
    EXPECT_GE(oracle_checks, 12) << "the oracle comparison must not be skipped";
  }
}

TYPED_TEST(Paged, BatchStepIsBitIdenticalToContiguousForAnyThreadCount) {
  using T = TypeParam;
  const std::size_t H = 2, g = 4, d = 64;
  // Ragged, with one sequence long enough to span several parallel chunks (4096 positions).
  const std::vector<std::size_t> lens = {9000, 0, 700, 33};
  const std::size_t cap = 9000;
  twin_caches<T> c(lens, H, d, 16, 5);
  rng r(3);
  const auto q = random_queries(r, lens.size() * H * g, d, 2.0f);
  sparq::decode_policy pol;
  pol.dense_below = 64;
  pol.top_k_fraction = 1.0 / 8;
  pol.top_k_min = 32;
  sparq::batch_step<T> fs(lens.size(), H, g, cap, d, pol, 8);
  sparq::batch_step<T, sparq::paged_kv_head_view<const T>> ps(lens.size(), H, g, cap, d, pol, 8);
  ASSERT_EQ(fs.workspace_bytes(), ps.workspace_bytes());
  std::vector<unsigned char> w1(fs.workspace_bytes()), w2(ps.workspace_bytes());
  std::vector<float> want(q.size()), got(q.size());
  sparq::thread_pool pool(2);
  fs.prepare(q.data(), want.data(), c.flat, {w1.data(), w1.size()}, 1);
  sparq::run(pool, 1, fs);
  for (std::size_t nth : {1u, 2u, 8u}) {  // 8 items: nth = 8 runs whole items, 1 and 2 too
    SCOPED_TRACE(nth);
    std::fill(got.begin(), got.end(), -1.0f);
    ps.prepare(q.data(), got.data(), c.paged, {w2.data(), w2.size()}, nth);
    sparq::run(pool, nth, ps);
    EXPECT_TRUE(same_bits(want.data(), got.data(), q.size()));
  }
  // One long sequence, fewer items than threads: the S-split path.
  twin_caches<T> one({9000}, 1, d, 64, 9);
  sparq::batch_step<T> f1(1, 1, g, cap, d, pol, 2);
  sparq::batch_step<T, sparq::paged_kv_head_view<const T>> p1(1, 1, g, cap, d, pol, 2);
  std::vector<unsigned char> w3(f1.workspace_bytes()), w4(p1.workspace_bytes());
  std::vector<float> a(g * d), b(g * d);
  f1.prepare(q.data(), a.data(), one.flat, {w3.data(), w3.size()}, 2);
  sparq::run(pool, 2, f1);
  p1.prepare(q.data(), b.data(), one.paged, {w4.data(), w4.size()}, 2);
  ASSERT_GT(p1.phases(), 1u);
  sparq::run(pool, 2, p1);
  EXPECT_TRUE(same_bits(a.data(), b.data(), g * d));
}

TEST(PagedTraffic, SameBytesPerArenaAsContiguous) {
  const std::size_t g = 4, d = 64, S = 2000;
  twin_caches<sparq::f16> c({S}, 1, d, 32, 11);
  rng r(1);
  const auto q = random_queries(r, g, d, 2.0f);
  const sparq::config cfg{8, 128, 32};
  scratch_buffer b(sparq::step_workspace_bytes(g, S, d, cfg));
  std::vector<float> out(g * d);
  sparq::traffic_counter t1, t2;
  sparq::step<sparq::f16>(q.data(), g, c.flat.head(0, 0), cfg, b.ws(), out.data(), t1);
  sparq::step<sparq::f16>(q.data(), g, c.paged.head(0, 0), cfg, b.ws(), out.data(), t2);
  for (sparq::arena a : {sparq::arena::k, sparq::arena::kt, sparq::arena::v, sparq::arena::v_mean})
    EXPECT_EQ(t1.bytes_read(a), t2.bytes_read(a)) << sparq::arena_name(a);
  EXPECT_EQ(t2.bytes_read(sparq::arena::kt), S * 8 * sizeof(sparq::f16));
}

// ---------------------------------------------------------------------------------------------
// The owning cache

TEST(PagedCache, AppendTakesPagesResetReturnsThemTableDescribesThem) {
  sparq::paged_kv_cache<float> c(3, 2, 10, 4, 8);
  EXPECT_EQ(c.free_pages(), 10u);
  std::vector<float> k(9 * 2 * 8, 1.0f), v(9 * 2 * 8, 2.0f);
  c.append(0, 9, k.data(), v.data());  // 3 pages (4 + 4 + 1)
  c.append(2, 4, k.data(), v.data());  // 1 page, full
  EXPECT_EQ(c.free_pages(), 6u);
  EXPECT_EQ(c.pages(0).size(), 3u);
  const sparq::page_table t = c.table();
  EXPECT_NO_THROW(t.validate());
  EXPECT_EQ(t.length(0), 9u);
  EXPECT_EQ(t.length(1), 0u);
  EXPECT_EQ(t.length(2), 4u);
  EXPECT_EQ(t.last_page_len[0], 1);
  EXPECT_EQ(t.last_page_len[2], 4);
  // The pool + table route gives the same view as the cache's own.
  const auto a = c.pool().head(t, 0, 1, c.v_mean(0, 1)), b = c.head(0, 1);
  for (std::size_t s = 0; s < 9; ++s) EXPECT_EQ(a.k.row(s), b.k.row(s));
  EXPECT_EQ(a.kt.page(2).data, b.kt.page(2).data);
  EXPECT_FLOAT_EQ(c.v_mean(0, 1)[3], 2.0f);
  c.reset(0);
  EXPECT_EQ(c.free_pages(), 9u);
  EXPECT_EQ(c.length(0), 0u);
  EXPECT_EQ(c.v_mean(0, 1)[3], 0.0f);
  // 40 tokens need 10 pages; 9 are free: throws and changes nothing.
  std::vector<float> big(40 * 2 * 8, 0.5f);
  EXPECT_SPARQ_ERROR(c.append(1, 40, big.data(), big.data()), "needs 10 more pages");
  EXPECT_EQ(c.free_pages(), 9u);
  EXPECT_EQ(c.length(1), 0u);
}

// A paged batch_step's prepare(paged_kv_cache) that fails (here: the cache holds fewer
// sequences than the batch) unbinds the step it replaces: running it aborts instead of
// computing the previous step's inputs again.
TEST(PagedDeathTest, FailedPrepareUnbindsTheStep) {
  const std::size_t d = 16, g = 2, S = 20;
  sparq::config cfg;
  cfg.rank = 4;
  cfg.top_k = 8;
  cfg.local = 2;
  sparq::paged_kv_cache<float> one(1, 1, 8, 8, d), two(2, 1, 8, 8, d);
  std::vector<float> x(S * d, 0.5f), q(2 * g * d, 1.0f), out(2 * g * d);
  two.append(0, S, x.data(), x.data());
  two.append(1, S, x.data(), x.data());
  sparq::batch_step<float, sparq::paged_kv_head_view<const float>> st(2, 1, g, S, d, cfg, 1);
  std::vector<unsigned char> w(st.workspace_bytes());
  st.prepare(q.data(), out.data(), two, {w.data(), w.size()}, 1);
  EXPECT_SPARQ_ERROR(st.prepare(q.data(), out.data(), one, {w.data(), w.size()}, 1),
                     "cache.max_sequences() = 1; must be >= batch (2)");
  EXPECT_DEATH(st.run_phase(0, 0, 1), "run_phase before a successful prepare\\(\\)");
}

TEST(PagedCache, ShuffleIsDeterministicAndScattersPages) {
  auto pages_after = [](std::uint64_t seed) {
    sparq::paged_kv_cache<float> c(1, 1, 64, 1, 4);
    c.shuffle_free_pages(seed);
    std::vector<float> x(64 * 4, 0.0f);
    c.append(0, 64, x.data(), x.data());
    return c.pages(0);
  };
  const auto a = pages_after(1), b = pages_after(1), e = pages_after(2);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, e);
  auto sorted = a;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_NE(a, sorted);
  for (std::size_t i = 0; i < sorted.size(); ++i) EXPECT_EQ(sorted[i], std::int32_t(i));
}

// ---------------------------------------------------------------------------------------------
// Errors

TEST(PagedErrors, TableValidationNamesTheField) {
  const std::int32_t indptr[] = {0, 2, 1}, idx[] = {0, 5}, last[] = {3, 1};
  sparq::page_table t{indptr, idx, last, 2, 16, 4};
  EXPECT_SPARQ_ERROR(t.validate(), "indptr[2] = 1 < indptr[1] = 2");
  const std::int32_t ok_ptr[] = {0, 1, 2};
  t.indptr = ok_ptr;
  EXPECT_SPARQ_ERROR(t.validate(), "page_table.indices[1] = 5; allowed: 0 <= page id < num_pages (4)");
  t.num_pages = 6;
  EXPECT_NO_THROW(t.validate());
  const std::int32_t bad_last[] = {0, 1};
  t.last_page_len = bad_last;
  EXPECT_SPARQ_ERROR(t.validate(), "last_page_len[0] = 0; allowed: 1..page_size (16)");
  t.last_page_len = last;
  t.page_size = 12;
  EXPECT_SPARQ_ERROR(t.validate(), "page_table.page_size = 12; allowed: a power of two");
  EXPECT_SPARQ_ERROR((sparq::paged_kv_cache<float>(1, 1, 4, 3, 8)), "page_size = 3");
  EXPECT_SPARQ_ERROR((sparq::paged_kv_cache<float>(1, 1, 0, 4, 8)), "num_pages = 0");
  t.page_size = 16;
  std::vector<float> buf(6 * 16 * 8);
  auto pool = sparq::page_pool<const float>::hnd(buf.data(), buf.data(), nullptr, 1, 8, 32);
  EXPECT_SPARQ_ERROR(pool.head(t, 0, 0, nullptr), "page_table.page_size = 16; must equal the pool's page_size (32)");
  EXPECT_SPARQ_ERROR(pool.head(t, 2, 0, nullptr), "sequence = 2; allowed: < page_table.batch (2)");
}

TEST(PagedErrors, CheckedStepsNameTheViewField) {
  const std::size_t g = 2, d = 16, S = 40;
  twin_caches<float> c({S}, 1, d, 8, 1);
  const std::vector<float> q(g * d, 0.5f);
  std::vector<float> out(g * d);
  const sparq::config cfg{4, 8, 2};
  scratch_buffer b(sparq::step_workspace_bytes(g, S, d, cfg));
  auto kv = c.paged.head(0, 0);
  auto bad = kv;
  bad.kt.dim_stride = 4;
  EXPECT_SPARQ_ERROR(sparq::checked_step<float>(q.data(), g, bad, cfg, b.ws(), out.data()),
                     "kt.dim_stride = 4; allowed: >= page_size (8)");
  bad = kv;
  bad.v.pages = nullptr;
  EXPECT_SPARQ_ERROR(sparq::checked_step<float>(q.data(), g, bad, cfg, b.ws(), out.data()),
                     "v.pages is null");
  bad = kv;
  bad.k.row_stride = 3;
  EXPECT_SPARQ_ERROR(sparq::checked_step<float>(q.data(), g, bad, cfg, b.ws(), out.data()),
                     "k.row_stride = 3; allowed: >= dim (16)");
  bad = kv;
  bad.kt.length = S - 1;
  EXPECT_SPARQ_ERROR(sparq::checked_step<float>(q.data(), g, bad, cfg, b.ws(), out.data()),
                     "kt.length = 39");
  scratch_buffer db(sparq::dense_workspace_bytes(g, d));
  bad = kv;
  bad.v.page_stride = 10;
  EXPECT_SPARQ_ERROR(sparq::checked_dense_step<float>(q.data(), g, bad.k, bad.v, 0.0f, db.ws(),
                                                      out.data()),
                     "v.page_stride = 10");
  // A paged batch_step refuses a contiguous cache at compile time; a paged cache without Kt
  // is refused at prepare for SparQ sequences.
  sparq::paged_kv_cache<float> no_kt(1, 1, 8, 8, d, false);
  std::vector<float> x(S * d, 1.0f);
  no_kt.append(0, S, x.data(), x.data());
  sparq::batch_step<float, sparq::paged_kv_head_view<const float>> st(1, 1, g, S, d, cfg, 1);
  std::vector<unsigned char> w(st.workspace_bytes());
  std::vector<float> bo(g * d);
  EXPECT_SPARQ_ERROR(st.prepare(q.data(), bo.data(), no_kt, {w.data(), w.size()}, 1),
                     "batch_step::prepare: sequence 0 head 0: kt missing");
  // prepare_views runs the checked_step checks on every view, naming the item.
  auto views_with = [&](auto edit) {
    return [&, edit](std::size_t, std::size_t) {
      auto v = c.paged.head(0, 0);
      edit(v);
      return v;
    };
  };
  using view_t = sparq::paged_kv_head_view<const float>;
  EXPECT_SPARQ_ERROR(st.prepare_views(q.data(), bo.data(),
                                      views_with([](view_t& v) { v.k.pages = nullptr; }),
                                      {w.data(), w.size()}, 1),
                     "sequence 0 head 0: k.pages is null");
  EXPECT_SPARQ_ERROR(st.prepare_views(q.data(), bo.data(),
                                      views_with([](view_t& v) { v.kt.page_stride = 1; }),
                                      {w.data(), w.size()}, 1),
                     "sequence 0 head 0: kt.page_stride = 1");
  EXPECT_NO_THROW(st.prepare_views(q.data(), bo.data(), views_with([](view_t&) {}),
                                   {w.data(), w.size()}, 1));
}

}  // namespace
