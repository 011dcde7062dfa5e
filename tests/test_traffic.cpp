// traffic_counter pinned to the closed forms of docs/sparq-semantics.md ("What a step reads"),
// per stage and arena, for f32/f16/bf16, many shapes, MHA and GQA; the distinct 64-byte lines
// against an independent oracle built from the positions/components the step returns; the
// append traffic of kv_cache; and format_traffic.

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <random>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

#include "sparq/counting_allocator.hpp"
#include "sparq/workspace_buffer.hpp"
#include "sparq/sparq.hpp"

namespace {

using sparq::arena;
using sparq::stage;

struct shape {
  std::size_t S, d, r, k, l;
  bool reallocate = true;
};

std::string describe(const shape& s, std::size_t g) {
  return "S=" + std::to_string(s.S) + " d=" + std::to_string(s.d) + " r=" + std::to_string(s.r) +
         " k=" + std::to_string(s.k) + " l=" + std::to_string(s.l) +
         " realloc=" + std::to_string(s.reallocate) + " g=" + std::to_string(g);
}

const std::vector<shape> shapes = {
    {4096, 128, 32, 128, 32},       {1000, 64, 8, 64, 16},      {333, 40, 5, 17, 3},
    {257, 96, 1, 1, 0},             {64, 128, 16, 64, 16},      // k == S: dense path
    {100, 72, 72, 200, 0},          // k > S
    {2048, 128, 16, 128, 32, false},  // no reallocation
    {129, 64, 64, 128, 8},          // r = d, k = S - 1
    {17, 8, 3, 5, 5},               // l = k
};

/// Distinct 64-byte lines covered by a set of byte ranges.
struct line_oracle {
  std::set<std::uintptr_t> lines;
  void add(const void* p, std::size_t bytes) {
    if (bytes == 0) return;
    const auto a = reinterpret_cast<std::uintptr_t>(p);
    for (auto l = a / 64; l <= (a + bytes - 1) / 64; ++l) lines.insert(l);
  }
  std::size_t size() const { return lines.size(); }
};

std::size_t ceil_div(std::size_t a, std::size_t b) { return (a + b - 1) / b; }

template <class T>
struct filled_cache {
  sparq::allocation_stats stats;
  sparq::kv_cache<T, sparq::counting_allocator<T>> cache;
  filled_cache(std::size_t heads, std::size_t cap, std::size_t S, std::size_t d, unsigned seed)
      : cache(1, heads, cap, d, true, sparq::counting_allocator<T>(stats)) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd;
    std::vector<float> k(heads * d), v(heads * d);
    for (std::size_t t = 0; t < S; ++t) {
      for (auto& x : k) x = nd(rng);
      for (auto& x : v) x = nd(rng);
      cache.append(0, k.data(), v.data());
    }
  }
};

template <class T>
class traffic : public ::testing::Test {};
using storage_types = ::testing::Types<float, sparq::f16, sparq::bf16>;
TYPED_TEST_SUITE(traffic, storage_types);

// SparQ step: S*r of Kt (scores), min(k,S) rows of K and V (attend), d fp32 of v_mean
// (reallocate); k >= S: no Kt, all S rows, no v_mean. Nothing written. Identical for g = 1, 4, 8.
TYPED_TEST(traffic, SparqStepMatchesClosedForm) {
  using T = TypeParam;
  const std::size_t es = sizeof(T);
  for (const shape& sh : shapes) {
    // Capacity a multiple of 32 elements (64 bytes at 2-byte T): every Kt run starts a line.
    const std::size_t cap = (sh.S + 31) / 32 * 32 + 32;
    filled_cache<T> fc(2, cap, sh.S, sh.d, 11);
    sparq::config cfg;
    cfg.rank = sh.r;
    cfg.top_k = sh.k;
    cfg.local = sh.l;
    cfg.reallocate = sh.reallocate;
    std::size_t first_k = 0, first_v = 0, first_kt = 0;
    for (std::size_t g : {1u, 4u, 8u}) {
      SCOPED_TRACE(describe(sh, g));
      std::mt19937 rng(static_cast<unsigned>(g));
      std::normal_distribution<float> nd;
      std::vector<float> q(g * sh.d), out(g * sh.d);
      for (auto& x : q) x = nd(rng);
      auto ws = sparq::workspace_buffer<>::for_step(g, sh.S, sh.d, cfg);
      const auto kv = fc.cache.head(0, 1);
      sparq::traffic_counter t;
      const sparq::step_result res = sparq::checked_step(q.data(), g, kv, cfg, ws, out.data(), t);

      const std::size_t n = std::min(sh.k, sh.S);
      const bool sparse = sh.k < sh.S;
      ASSERT_EQ(res.n_positions, n);
      const std::size_t kt_bytes = sparse ? sh.S * sh.r * es : 0;
      const std::size_t row_bytes = n * sh.d * es;
      const std::size_t vm_bytes = sparse && sh.reallocate ? sh.d * sizeof(float) : 0;
      EXPECT_EQ(t.bytes_read(stage::scores, arena::kt), kt_bytes);
      EXPECT_EQ(t.bytes_read(stage::attend, arena::k), row_bytes);
      EXPECT_EQ(t.bytes_read(stage::attend, arena::v), row_bytes);
      EXPECT_EQ(t.bytes_read(stage::reallocate, arena::v_mean), vm_bytes);
      // Nothing else, and nothing written.
      EXPECT_EQ(t.bytes_read(), kt_bytes + 2 * row_bytes + vm_bytes);
      EXPECT_EQ(t.bytes_written(), 0u);
      EXPECT_EQ(t.bytes_read(stage::dense), 0u);
      EXPECT_EQ(t.bytes_read(stage::append), 0u);
      // The spec's element count: S*r + 2*k*d (+ d fp32).
      EXPECT_EQ(t.total_bytes(), (sparse ? sh.S * sh.r : 0) * es + 2 * n * sh.d * es + vm_bytes);

      // Distinct lines against an oracle built from what the step says it chose.
      line_oracle kt_lines, k_lines, v_lines;
      for (std::size_t j = 0; j < res.n_components; ++j)
        kt_lines.add(kv.kt.dim_row(res.components[j]), sh.S * es);
      for (std::size_t j = 0; j < res.n_positions; ++j) {
        k_lines.add(kv.k.row(res.positions[j]), sh.d * es);
        v_lines.add(kv.v.row(res.positions[j]), sh.d * es);
      }
      EXPECT_EQ(res.n_components, sparse ? sh.r : 0u);
      EXPECT_EQ(t.lines_touched(stage::scores, arena::kt), kt_lines.size());
      EXPECT_EQ(t.lines_touched(stage::attend, arena::k), k_lines.size());
      EXPECT_EQ(t.lines_touched(stage::attend, arena::v), v_lines.size());
      EXPECT_EQ(t.lines_touched(arena::kt), kt_lines.size());
      // Closed forms: runs start on a line (aligned base, cap*size % 64 == 0), so Kt lines are
      // exactly r*ceil(S*size/64); rows whose size is whole lines give k*d*size/64 lines.
      EXPECT_EQ(t.lines_touched(arena::kt), sparse ? sh.r * ceil_div(sh.S * es, 64) : 0u);
      if (sh.d * es % 64 == 0) {
        EXPECT_EQ(t.lines_touched(arena::k), n * sh.d * es / 64);
        EXPECT_EQ(t.lines_touched(arena::v), n * sh.d * es / 64);
      } else {
        // Between the contiguous packing and one extra straddled line per row.
        EXPECT_GE(t.lines_touched(arena::k), ceil_div(n * sh.d * es, 64));
        EXPECT_LE(t.lines_touched(arena::k), n * (ceil_div(sh.d * es, 64) + 1));
      }
      EXPECT_EQ(t.lines_touched(arena::v_mean), vm_bytes ? ceil_div(sh.d * 4, 64) : 0u);

      // GQA: once per group, not per query head.
      if (g == 1) {
        first_k = t.bytes_read(arena::k);
        first_v = t.bytes_read(arena::v);
        first_kt = t.bytes_read(arena::kt);
      } else {
        EXPECT_EQ(t.bytes_read(arena::k), first_k);
        EXPECT_EQ(t.bytes_read(arena::v), first_v);
        EXPECT_EQ(t.bytes_read(arena::kt), first_kt);
      }
    }
  }
}

// Dense step: 2*S*d elements (K and V rows), all in stage dense; contiguous rows touch
// ceil(S*d*size/64) lines each (aligned base).
TYPED_TEST(traffic, DenseStepMatchesClosedForm) {
  using T = TypeParam;
  const std::size_t es = sizeof(T);
  for (const shape& sh : shapes) {
    filled_cache<T> fc(1, sh.S, sh.S, sh.d, 5);
    for (std::size_t g : {1u, 4u, 8u}) {
      SCOPED_TRACE(describe(sh, g));
      std::vector<float> q(g * sh.d, 0.25f), out(g * sh.d);
      auto wd = sparq::workspace_buffer<>::for_dense(g, sh.d);
      const auto kv = fc.cache.head(0, 0);
      sparq::traffic_counter t;
      sparq::dense_step(q.data(), g, kv.k, kv.v, 0.0f, wd, out.data(), nullptr, t);
      const std::size_t rows = sh.S * sh.d * es;
      EXPECT_EQ(t.bytes_read(stage::dense, arena::k), rows);
      EXPECT_EQ(t.bytes_read(stage::dense, arena::v), rows);
      EXPECT_EQ(t.bytes_read(), 2 * rows);
      EXPECT_EQ(t.bytes_written(), 0u);
      EXPECT_EQ(t.lines_touched(arena::k), ceil_div(rows, 64));
      EXPECT_EQ(t.lines_touched(arena::v), ceil_div(rows, 64));
      EXPECT_EQ(t.lines_touched(arena::kt), 0u);
    }
  }
}

// Views into a caller's own layout: padded row strides, Kt stride > S, bases not on a line.
// Bytes are unchanged; lines follow the oracle.
TYPED_TEST(traffic, StridedOffsetViews) {
  using T = TypeParam;
  const std::size_t es = sizeof(T);
  const std::size_t S = 300, d = 64, pad = 8, cap = 333, off = 3;
  std::mt19937 rng(3);
  std::normal_distribution<float> nd;
  std::vector<T> K(off + S * (d + pad)), V(off + S * (d + pad)), Kt(off + d * cap);
  for (std::size_t s = 0; s < S; ++s)
    for (std::size_t i = 0; i < d; ++i) {
      const float kx = nd(rng), vx = nd(rng);
      K[off + s * (d + pad) + i] = sparq::from_float<T>(kx);
      V[off + s * (d + pad) + i] = sparq::from_float<T>(vx);
      Kt[off + i * cap + s] = sparq::from_float<T>(kx);
    }
  std::vector<float> vmean(d, 0.0f);
  sparq::kv_head_view<const T> kv{{K.data() + off, S, d, d + pad},
                                  {Kt.data() + off, d, S, cap},
                                  {V.data() + off, S, d, d + pad},
                                  vmean.data()};
  sparq::config cfg;
  cfg.rank = 12;
  cfg.top_k = 40;
  cfg.local = 10;
  for (std::size_t g : {1u, 3u, 8u}) {
    std::vector<float> q(g * d), out(g * d);
    for (auto& x : q) x = nd(rng);
    auto ws = sparq::workspace_buffer<>::for_step(g, S, d, cfg);
    sparq::traffic_counter t;
    const auto res = sparq::checked_step(q.data(), g, kv, cfg, ws, out.data(), t);
    EXPECT_EQ(t.bytes_read(arena::kt), S * 12 * es);
    EXPECT_EQ(t.bytes_read(arena::k), 40 * d * es);
    EXPECT_EQ(t.bytes_read(arena::v), 40 * d * es);
    EXPECT_EQ(t.bytes_read(arena::v_mean), d * 4);
    line_oracle kt_lines, k_lines;
    for (std::size_t j = 0; j < res.n_components; ++j)
      kt_lines.add(kv.kt.dim_row(res.components[j]), S * es);
    for (std::size_t j = 0; j < res.n_positions; ++j)
      k_lines.add(kv.k.row(res.positions[j]), d * es);
    EXPECT_EQ(t.lines_touched(arena::kt), kt_lines.size());
    EXPECT_EQ(t.lines_touched(arena::k), k_lines.size());
    // Unaligned runs: between r*ceil(S*size/64) and one more line per run.
    EXPECT_GE(t.lines_touched(arena::kt), 12 * ceil_div(S * es, 64));
    EXPECT_LE(t.lines_touched(arena::kt), 12 * (ceil_div(S * es, 64) + 1));
  }
}

// Append: per token and KV head, K and V rows written (d elements each), one Kt column (d
// single elements, d distinct lines), v_mean read and written (d fp32 each).
TYPED_TEST(traffic, AppendMatchesClosedForm) {
  using T = TypeParam;
  const std::size_t es = sizeof(T);
  for (std::size_t d : {8u, 40u, 64u, 128u}) {
    for (std::size_t H : {1u, 3u}) {
      for (std::size_t n : {1u, 5u}) {
        SCOPED_TRACE("d=" + std::to_string(d) + " H=" + std::to_string(H) +
                     " n=" + std::to_string(n));
        const std::size_t cap = 64;  // 64 elements >= one line per Kt row
        sparq::allocation_stats stats;
        sparq::kv_cache<T, sparq::counting_allocator<T>> c(1, H, cap, d, true,
                                                           sparq::counting_allocator<T>(stats));
        // Room for the 7 warm-up tokens as well as the n counted ones.
        std::vector<float> k(std::max<std::size_t>(n, 7) * H * d, 0.5f), v(k.size(), -0.5f);
        c.append(0, 7, k.data(), v.data());  // not counted
        sparq::traffic_counter t;
        c.append(0, n, k.data(), v.data(), t);
        const std::size_t rows = n * H * d * es, mean = n * H * d * 4;
        EXPECT_EQ(t.bytes_written(stage::append, arena::k), rows);
        EXPECT_EQ(t.bytes_written(stage::append, arena::v), rows);
        EXPECT_EQ(t.bytes_written(stage::append, arena::kt), rows);
        EXPECT_EQ(t.bytes_read(stage::append, arena::v_mean), mean);
        EXPECT_EQ(t.bytes_written(stage::append, arena::v_mean), mean);
        EXPECT_EQ(t.bytes_read(), mean);
        EXPECT_EQ(t.bytes_written(), 3 * rows + mean);
        // The Kt column is scattered: one line per element (consecutive tokens share them).
        EXPECT_EQ(t.lines_touched(arena::kt), H * d * ceil_div(n * es, 64));
        EXPECT_EQ(t.lines_touched(arena::v_mean), ceil_div(H * d * 4, 64));  // [H][d] contiguous
        // Rows 7..7+n of each head: contiguous n*d*size bytes per head.
        line_oracle kl;
        for (std::size_t h = 0; h < H; ++h) kl.add(c.keys(0, h).row(7), n * d * es);
        EXPECT_EQ(t.lines_touched(arena::k), kl.size());
      }
    }
  }
}

// One whole decode step (append + SparQ step) against the spec's per-KV-head element counts.
TYPED_TEST(traffic, DecodeStepTotalsAndCompression) {
  using T = TypeParam;
  const std::size_t es = sizeof(T);
  const std::size_t S = 4096, d = 128, g = 4;
  filled_cache<T> fc(1, S, S - 2, d, 9);
  sparq::config cfg;
  cfg.rank = 32;
  cfg.top_k = 128;
  cfg.local = 32;
  std::vector<float> q(g * d, 0.1f), out(g * d), kn(d, 0.3f), vn(d, 0.2f);
  for (std::size_t i = 0; i < d; ++i) q[i] = float(i % 7) - 3.0f;
  sparq::traffic_counter ts, td;
  fc.cache.append(0, 1, kn.data(), vn.data(), ts);
  fc.cache.append(0, 1, kn.data(), vn.data(), td);  // the same kind of append for dense
  auto ws = sparq::workspace_buffer<>::for_step(g, S + 1, d, cfg);
  auto wd = sparq::workspace_buffer<>::for_dense(g, d);
  const auto kv = fc.cache.head(0, 0);
  const std::size_t len = kv.length();
  ASSERT_EQ(len, S);
  sparq::step(q.data(), g, kv, cfg, ws, out.data(), ts);
  sparq::dense_step(q.data(), g, kv.k, kv.v, 0.0f, wd, out.data(), nullptr, td);
  // SparQ: S*r + 2*k*d + 2*d (+ Kt column d) elements, + 3*d fp32 of v_mean.
  const std::size_t sparq_elems = len * 32 + 2 * 128 * d + 2 * d + d;
  EXPECT_EQ(ts.total_bytes(), sparq_elems * es + 3 * d * 4);
  const std::size_t dense_elems = 2 * len * d + 2 * d + d;
  EXPECT_EQ(td.total_bytes(), dense_elems * es + 2 * d * 4);
  const std::size_t r_sparq = len * 32 * es + 2 * 128 * d * es + 2 * d * 4;
  const std::size_t r_dense = 2 * len * d * es + d * 4;
  EXPECT_EQ(ts.bytes_read(), r_sparq);
  EXPECT_EQ(td.bytes_read(), r_dense);

  const std::string table = sparq::format_traffic(ts, td);
  for (const char* word : {"scores", "attend", "reallocate", "append", "Kt", "v_mean",
                           "lines(64B)", "ratio", "1/"})
    EXPECT_NE(table.find(word), std::string::npos) << word << "\n" << table;
  EXPECT_EQ(table.find("dense "), std::string::npos) << table;  // no dense row in a SparQ step
  EXPECT_NE(table.find(std::to_string(len * 32 * es)), std::string::npos) << table;
  if constexpr (std::is_same_v<T, sparq::f16>) std::printf("%s", table.c_str());
}

TEST(traffic_counter, ResetAndStageBookkeeping) {
  sparq::traffic_counter t;
  alignas(64) static float buf[64];
  t.begin(stage::attend);
  EXPECT_EQ(t.current_stage(), stage::attend);
  t.read(arena::k, buf, 100);
  t.read(arena::k, buf + 8, 4);  // same lines again: bytes add, lines do not
  t.begin(stage::dense);
  t.read(arena::k, buf, 64);
  t.write(arena::scratch, buf + 16, 128);
  EXPECT_EQ(t.bytes_read(stage::attend, arena::k), 104u);
  EXPECT_EQ(t.bytes_read(arena::k), 168u);
  EXPECT_EQ(t.bytes_written(arena::scratch), 128u);
  EXPECT_EQ(t.bytes_written(stage::dense), 128u);
  EXPECT_EQ(t.total_bytes(), 296u);
  EXPECT_EQ(t.lines_touched(arena::k), 2u);
  EXPECT_EQ(t.lines_touched(stage::attend, arena::k), 2u);
  EXPECT_EQ(t.lines_touched(stage::dense, arena::k), 1u);
  EXPECT_EQ(t.lines_touched(arena::scratch), 2u);
  EXPECT_EQ(t.lines_touched(), 4u);
  t.read(arena::v, buf, 0);  // empty access: no line
  EXPECT_EQ(t.lines_touched(arena::v), 0u);
  t.reset();
  EXPECT_EQ(t.total_bytes(), 0u);
  EXPECT_EQ(t.lines_touched(), 0u);
  EXPECT_EQ(t.current_stage(), stage::scores);
  const std::string empty = sparq::format_traffic(t);
  EXPECT_NE(empty.find("total"), std::string::npos);
}

/// A policy that counts nothing and logs the stages it is told about, repeats collapsed: what
/// a timing policy (bench/prof_phases.cpp) sees as phase marks.
struct stage_log {
  static constexpr bool enabled = false;
  std::vector<stage> seen;
  void begin(stage s) {
    if (seen.empty() || seen.back() != s) seen.push_back(s);
  }
  void read(arena, const void*, std::size_t) noexcept {}
  void write(arena, const void*, std::size_t) noexcept {}
};

std::string names(const std::vector<stage>& v) {
  std::string out;
  for (stage s : v) out += std::string(out.empty() ? "" : " ") + sparq::stage_name(s);
  return out;
}

// The stage marks of a step, in order: a SparQ step (k < S) begins scores, select, attend,
// reallocate; k >= S select (the positions 0..S-1) and attend; dense_step only dense.
TEST(traffic_stages, StepMarksItsStagesInOrder) {
  filled_cache<sparq::f16> fc(1, 512, 500, 64, 3);
  std::vector<float> q(4 * 64, 0.25f), out(4 * 64);
  sparq::config cfg;
  cfg.rank = 8;
  cfg.top_k = 64;
  cfg.local = 16;
  auto ws = sparq::workspace_buffer<>::for_step(4, 500, 64, cfg);
  stage_log a;
  sparq::step(q.data(), 4, fc.cache.head(0, 0), cfg, ws, out.data(), a);
  EXPECT_EQ(names(a.seen), "scores select attend reallocate");
  cfg.top_k = 500;
  stage_log b;
  sparq::step(q.data(), 4, fc.cache.head(0, 0), cfg, ws, out.data(), b);
  EXPECT_EQ(names(b.seen), "select attend");
  stage_log c;
  auto dws = sparq::workspace_buffer<>::for_dense(4, 64);
  const auto kv = fc.cache.head(0, 0);
  sparq::dense_step(q.data(), 4, kv.k, kv.v, 0.0f, dws, out.data(), nullptr, c);
  EXPECT_EQ(names(c.seen), "dense");
}

// batch_step on one thread (whole items): the same marks per (sequence, KV head) item, in item
// order; without reallocation the last stage is attend. And its per-stage bytes equal the sum
// of sparq::step's over the items (select reads nothing counted).
TEST(traffic_stages, BatchStepMarksEachItemAndCountsLikeStep) {
  const std::size_t H = 2, g = 4, d = 64, S = 1500;
  filled_cache<sparq::f16> fc(H, 1536, S, d, 5);
  std::mt19937 rng(9);
  std::normal_distribution<float> nd;
  std::vector<float> q(H * g * d), out(H * g * d);
  for (auto& x : q) x = nd(rng);
  for (bool realloc : {true, false}) {
    SCOPED_TRACE(realloc ? "reallocate" : "no reallocation");
    sparq::config cfg;
    cfg.rank = 8;
    cfg.top_k = 128;
    cfg.local = 32;
    cfg.reallocate = realloc;
    sparq::batch_step<sparq::f16> st(1, H, g, 1536, d, cfg, 1);
    std::vector<std::byte> buf(st.workspace_bytes());
    st.prepare(q.data(), out.data(), fc.cache, {buf.data(), buf.size()}, 1);
    ASSERT_EQ(st.phases(), 1u);
    stage_log log;
    st.run_phase(0, 0, 1, log);
    const std::string item = realloc ? "scores select attend reallocate" : "scores select attend";
    EXPECT_EQ(names(log.seen), item + " " + item);

    sparq::traffic_counter tb, ts;
    st.prepare(q.data(), out.data(), fc.cache, {buf.data(), buf.size()}, 1);
    st.run_phase(0, 0, 1, tb);
    auto ws = sparq::workspace_buffer<>::for_step(g, S, d, cfg);
    std::vector<float> o1(g * d);
    for (std::size_t h = 0; h < H; ++h)
      sparq::step(q.data() + h * g * d, g, fc.cache.head(0, h), cfg, ws, o1.data(), ts);
    for (int si = 0; si < sparq::stage_count; ++si)
      for (int ai = 0; ai < sparq::arena_count; ++ai) {
        const auto s = static_cast<stage>(si);
        const auto a = static_cast<arena>(ai);
        EXPECT_EQ(tb.bytes_read(s, a), ts.bytes_read(s, a))
            << sparq::stage_name(s) << "/" << sparq::arena_name(a);
      }
    EXPECT_EQ(tb.bytes_read(stage::select), 0u);
    EXPECT_GT(tb.bytes_read(stage::scores, arena::kt), 0u);
    EXPECT_EQ(tb.bytes_read(stage::reallocate, arena::v_mean), realloc ? H * d * 4 : 0u);
  }
}

// batch_step marks what sparq::step marks for an item with k >= S (select attend), on the
// whole-item path; on the S-split path (one item, two threads) the phases mark scores,
// select, attend and reallocate in that order, dense mode's chunks dense.
TEST(traffic_stages, BatchStepMarksFullItemsAndSplitPhases) {
  const std::size_t H = 1, g = 4, d = 64, S = 1500;
  filled_cache<sparq::f16> fc(H, 1536, S, d, 6);
  std::vector<float> q(H * g * d, 0.5f), out(H * g * d);
  sparq::config cfg;
  cfg.rank = 8;
  cfg.top_k = 2000;  // >= S
  cfg.local = 32;
  // The marks of every phase of one step on nth threads (1 item: SparQ with nth > 1 takes
  // the split path, checked by its phase count).
  auto marks = [&](std::size_t nth, sparq::batch_mode mode) {
    sparq::batch_step<sparq::f16> st(1, H, g, 1536, d, cfg, nth, mode);
    std::vector<std::byte> buf(st.workspace_bytes());
    st.prepare(q.data(), out.data(), fc.cache, {buf.data(), buf.size()}, nth);
    if (mode == sparq::batch_mode::sparq && nth > 1) {
      EXPECT_GT(st.phases(), 1u);
    }
    stage_log log;
    for (std::size_t p = 0; p < st.phases(); ++p)
      for (std::size_t ith = 0; ith < nth; ++ith) st.run_phase(p, ith, nth, log);
    return names(log.seen);
  };
  EXPECT_EQ(marks(1, sparq::batch_mode::sparq), "select attend");
  // The split path (1 item, 2 threads) with k >= S: no scores mark either.
  EXPECT_EQ(marks(2, sparq::batch_mode::sparq), "select attend");
  cfg.top_k = 128;
  EXPECT_EQ(marks(2, sparq::batch_mode::sparq), "scores select attend reallocate");
  EXPECT_EQ(marks(2, sparq::batch_mode::dense), "dense");
}

TEST(traffic_counter, NoTrafficIsEmpty) {
  static_assert(!sparq::no_traffic::enabled);
  static_assert(sparq::traffic_counter::enabled);
  static_assert(std::is_empty_v<sparq::no_traffic>);
}

}  // namespace
