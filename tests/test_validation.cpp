// Tests for argument checking at the API boundary (config::validate, checked_step,
// checked_dense_step, and the sizes the caches, batch_step and the workspace planners accept):
// every bad argument throws sparq::error whose message names it, and
// valid edge cases (rank = d, local = top_k, k >= S without Kt, a workspace of exactly the
// planned size at any alignment) are accepted and compute the right thing.

#include "test_util.hpp"

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace {

using namespace sparq_test;

sparq::config valid_config() {
  sparq::config cfg;
  cfg.rank = 4;
  cfg.top_k = 8;
  cfg.local = 2;
  return cfg;
}

TEST(validation, config_fields_are_named) {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  auto with = [](auto change) {
    sparq::config c = valid_config();
    change(c);
    return c;
  };
  EXPECT_SPARQ_ERROR(with([](sparq::config& c) { c.rank = 0; }).validate(16), "config.rank");
  EXPECT_SPARQ_ERROR(with([](sparq::config& c) { c.rank = 17; }).validate(16), "config.rank");
  EXPECT_SPARQ_ERROR(with([](sparq::config& c) { c.top_k = 0; c.local = 0; }).validate(16), "config.top_k");
  EXPECT_SPARQ_ERROR(with([](sparq::config& c) { c.local = 9; }).validate(16), "config.local");
  EXPECT_SPARQ_ERROR(with([](sparq::config& c) { c.scale = -1.0f; }).validate(16), "config.scale");
  EXPECT_SPARQ_ERROR(with([](sparq::config& c) { c.scale = -0.0001f; }).validate(16), "config.scale");
  EXPECT_SPARQ_ERROR(with([=](sparq::config& c) { c.scale = nan; }).validate(16), "config.scale");
  EXPECT_SPARQ_ERROR(with([=](sparq::config& c) { c.scale = inf; }).validate(16), "config.scale");
  EXPECT_SPARQ_ERROR(valid_config().validate(0), "head_dim");
  // The message gives the value too.
  EXPECT_SPARQ_ERROR(with([](sparq::config& c) { c.rank = 17; }).validate(16), "17");

  // Valid edges.
  EXPECT_NO_THROW(with([](sparq::config& c) { c.rank = 16; }).validate(16));
  EXPECT_NO_THROW(with([](sparq::config& c) { c.rank = 1; }).validate(16));
  EXPECT_NO_THROW(with([](sparq::config& c) { c.local = 8; }).validate(16));
  EXPECT_NO_THROW(with([](sparq::config& c) { c.local = 0; }).validate(16));
  EXPECT_NO_THROW(with([](sparq::config& c) { c.scale = 0.0f; }).validate(16));
  EXPECT_NO_THROW(with([](sparq::config& c) { c.scale = 3.0f; }).validate(16));
  EXPECT_NO_THROW(sparq::config{}.validate(128));  // the defaults
  EXPECT_FLOAT_EQ(sparq::config{}.scale_for(64), 0.125f);
  EXPECT_FLOAT_EQ(with([](sparq::config& c) { c.scale = 0.3f; }).scale_for(64), 0.3f);
}

/// A valid step setup (S = 40, d = 16, g = 2) whose pieces each test breaks one at a time.
struct setup {
  std::size_t S = 40, d = 16, g = 2;
  head_data<float> head;
  std::vector<float> q, out;
  sparq::config cfg = valid_config();
  std::vector<unsigned char> ws;
  setup() : head(make()) {
    rng r(401);
    q = random_queries(r, g, d, 1.0f);
    out.assign(g * d, 0.0f);
    ws.resize(sparq::step_workspace_bytes(g, S, d, cfg));
  }
  static head_data<float> make() {
    rng r(400);
    return random_head<float>(r, 40, 16);
  }
  sparq::workspace workspace() { return {ws.data(), ws.size()}; }
  void run(const sparq::kv_head_view<const float>& kv) { sparq::checked_step<float>(q.data(), g, kv, cfg, workspace(), out.data()); }
};

TEST(validation, checked_step_accepts_a_valid_call) {
  setup s;
  EXPECT_NO_THROW(s.run(s.head.view()));
  const auto ref = sparq::ref::sparq<float>(s.q.data(), s.g, s.head.view(), s.cfg);
  std::vector<float> out(s.g * s.d);
  const auto res = sparq::step<float>(s.q.data(), s.g, s.head.view(), s.cfg, s.workspace(), out.data());
  EXPECT_EQ(out, s.out);
  EXPECT_EQ(res.n_positions, s.cfg.top_k);
}

TEST(validation, checked_step_names_null_pointers) {
  setup s;
  EXPECT_SPARQ_ERROR(sparq::checked_step<float>(nullptr, s.g, s.head.view(), s.cfg, s.workspace(), s.out.data()), "q is null");
  EXPECT_SPARQ_ERROR(sparq::checked_step<float>(s.q.data(), s.g, s.head.view(), s.cfg, s.workspace(), nullptr), "out is null");
  auto kv = s.head.view();
  kv.k.data = nullptr;
  EXPECT_SPARQ_ERROR(s.run(kv), "k.data");
  kv = s.head.view();
  kv.v.data = nullptr;
  EXPECT_SPARQ_ERROR(s.run(kv), "v.data");
  kv = s.head.view();
  kv.kt.data = nullptr;
  EXPECT_SPARQ_ERROR(s.run(kv), "kt.data");
  kv = s.head.view();
  kv.v_mean = nullptr;
  EXPECT_SPARQ_ERROR(s.run(kv), "v_mean");
  EXPECT_SPARQ_ERROR(sparq::checked_step<float>(s.q.data(), s.g, s.head.view(), s.cfg, {nullptr, s.ws.size()}, s.out.data()),
                     "workspace");
  // v_mean is not needed without reallocation, nor Kt when k >= S (dense path).
  kv = s.head.view();
  kv.v_mean = nullptr;
  s.cfg.reallocate = false;
  EXPECT_NO_THROW(s.run(kv));
  s.cfg = valid_config();
  s.cfg.top_k = s.S;
  kv = s.head.view();
  kv.kt.data = nullptr;
  kv.v_mean = nullptr;
  s.ws.resize(sparq::step_workspace_bytes(s.g, s.S, s.d, s.cfg));
  EXPECT_NO_THROW(s.run(kv));
}

TEST(validation, checked_step_names_bad_shapes_and_strides) {
  setup s;
  auto kv = s.head.view();
  kv.k.row_stride = s.d - 1;
  EXPECT_SPARQ_ERROR(s.run(kv), "k.row_stride");
  kv = s.head.view();
  kv.v.row_stride = 3;
  EXPECT_SPARQ_ERROR(s.run(kv), "v.row_stride");
  kv = s.head.view();
  kv.v.length = s.S - 1;
  EXPECT_SPARQ_ERROR(s.run(kv), "v.length");
  kv = s.head.view();
  kv.v.dim = s.d + 1;
  EXPECT_SPARQ_ERROR(s.run(kv), "v.dim");
  kv = s.head.view();
  kv.kt.dim_stride = s.S - 1;
  EXPECT_SPARQ_ERROR(s.run(kv), "kt.dim_stride");
  kv = s.head.view();
  kv.kt.length = s.S + 1;
  EXPECT_SPARQ_ERROR(s.run(kv), "kt.length");
  kv = s.head.view();
  kv.kt.dim = s.d - 1;
  EXPECT_SPARQ_ERROR(s.run(kv), "kt.dim");
  kv = s.head.view();
  kv.k.length = 0;
  kv.v.length = 0;
  kv.kt.length = 0;
  EXPECT_SPARQ_ERROR(s.run(kv), "length");
  kv = s.head.view();
  kv.k.dim = 0;
  EXPECT_SPARQ_ERROR(s.run(kv), "dim");
  EXPECT_SPARQ_ERROR(sparq::checked_step<float>(s.q.data(), 0, s.head.view(), s.cfg, s.workspace(), s.out.data()), "group");
}

TEST(validation, checked_step_names_bad_configs) {
  setup s;
  s.cfg.rank = 0;
  EXPECT_SPARQ_ERROR(s.run(s.head.view()), "config.rank");
  s.cfg = valid_config();
  s.cfg.rank = s.d + 1;
  EXPECT_SPARQ_ERROR(s.run(s.head.view()), "config.rank");
  s.cfg = valid_config();
  s.cfg.top_k = 0;
  s.cfg.local = 0;
  EXPECT_SPARQ_ERROR(s.run(s.head.view()), "config.top_k");
  s.cfg = valid_config();
  s.cfg.local = s.cfg.top_k + 1;
  EXPECT_SPARQ_ERROR(s.run(s.head.view()), "config.local");
  s.cfg = valid_config();
  s.cfg.scale = -0.5f;
  EXPECT_SPARQ_ERROR(s.run(s.head.view()), "config.scale");
  s.cfg.scale = std::numeric_limits<float>::quiet_NaN();
  EXPECT_SPARQ_ERROR(s.run(s.head.view()), "config.scale");
}

TEST(validation, checked_step_names_a_small_workspace) {
  setup s;
  const std::size_t need = sparq::step_workspace_bytes(s.g, s.S, s.d, s.cfg);
  EXPECT_SPARQ_ERROR(sparq::checked_step<float>(s.q.data(), s.g, s.head.view(), s.cfg, {s.ws.data(), need - 1}, s.out.data()),
                     "workspace.bytes");
  EXPECT_SPARQ_ERROR(sparq::checked_step<float>(s.q.data(), s.g, s.head.view(), s.cfg, {s.ws.data(), 0}, s.out.data()),
                     "workspace");
  // A workspace planned for fewer heads or a shorter length is too small.
  const std::size_t small = sparq::step_workspace_bytes(1, s.S / 2, s.d, s.cfg);
  ASSERT_LT(small, need);
  EXPECT_SPARQ_ERROR(sparq::checked_step<float>(s.q.data(), s.g, s.head.view(), s.cfg, {s.ws.data(), small}, s.out.data()),
                     "workspace");
}

TEST(validation, exactly_planned_workspace_works_at_every_alignment) {
  // The buffer ends exactly where the plan says (ASan builds catch any write past it), at every
  // byte offset of a 64-byte line; the results are bit-identical.
  rng r(402);
  for (std::size_t S : {17, 300}) {
    const std::size_t d = 80, g = 4;
    const auto head = random_head<sparq::bf16>(r, S, d, layout{1, 1, 1});
    const auto q = random_queries(r, g, d, 1.0f);
    sparq::config cfg;
    cfg.rank = 8;
    cfg.top_k = 10;
    cfg.local = 3;
    const std::size_t need = sparq::step_workspace_bytes(g, S, d, cfg);
    std::vector<float> first;
    for (std::size_t off = 0; off < 64; off += 5) {
      std::vector<unsigned char> mem(off + need);
      std::vector<float> out(g * d);
      sparq::checked_step<sparq::bf16>(q.data(), g, head.view(), cfg, {mem.data() + off, need}, out.data());
      if (first.empty()) first = out;
      EXPECT_EQ(std::memcmp(out.data(), first.data(), out.size() * 4), 0) << "offset " << off;
    }
    const std::size_t dneed = sparq::dense_workspace_bytes(g, d);
    for (std::size_t off = 0; off < 64; off += 9) {
      std::vector<unsigned char> mem(off + dneed);
      std::vector<float> out(g * d);
      sparq::checked_dense_step<sparq::bf16>(q.data(), g, head.k(), head.v(), 0.0f, {mem.data() + off, dneed}, out.data());
      const auto want = sparq::ref::dense<sparq::bf16>(q.data(), g, head.k(), head.v(), 1.0 / std::sqrt(80.0));
      EXPECT_LT(rel_l2(out.data(), want), 2e-5);
    }
  }
}

// Sizes a 64-bit size_t cannot hold, or positions past 32 bits (a step's indices), are
// rejected with the argument's name before anything is allocated or written; the noexcept
// workspace planners saturate at SIZE_MAX instead of wrapping, so the workspace checks fail.
TEST(validation, sizes_past_size_t_or_32_bit_positions_are_rejected) {
  const std::size_t big = std::size_t{1} << 62, smax = std::numeric_limits<std::size_t>::max();
  const std::size_t past = sparq::max_positions + 1;
  EXPECT_EQ(sparq::max_positions, 0xffffffffu);
  // kv_cache: capacity past 32-bit positions; an element count past size_t.
  EXPECT_SPARQ_ERROR(sparq::kv_cache<float>(1, 1, big, 4), "capacity");
  EXPECT_SPARQ_ERROR(sparq::kv_cache<float>(1, 1, past, 4), "max_positions");
  EXPECT_SPARQ_ERROR(sparq::kv_cache<float>(big, big, 16, 4), "more than the largest object");
  EXPECT_SPARQ_ERROR(sparq::kv_cache<sparq::f16>(1, 1, 16, big), "more than the largest object");
  // paged_kv_cache: a pool past size_t; an append whose count wrapped (a negative int).
  EXPECT_SPARQ_ERROR(sparq::paged_kv_cache<float>(1, big, 16, 16, 4), "more than the largest object");
  EXPECT_SPARQ_ERROR(sparq::paged_kv_cache<float>(big, 1, 16, 16, 4), "max_sequences");
  EXPECT_SPARQ_ERROR(sparq::kv_cache<sparq::f16>(std::size_t{1} << 60, 1, 1, 1), "batch x sizeof(length)");
  sparq::paged_kv_cache<float> pool(1, 1, 4, 16, 4);
  const std::vector<float> kv(4, 1.0f);
  EXPECT_SPARQ_ERROR(pool.append(0, smax, kv.data(), kv.data()), "max_positions");
  EXPECT_SPARQ_ERROR(pool.append(0, past, kv.data(), kv.data()), "max_positions");
  EXPECT_EQ(pool.length(0), 0u);
  EXPECT_EQ(pool.free_pages(), 4u);
  EXPECT_NO_THROW(pool.append(0, 1, kv.data(), kv.data()));
  EXPECT_EQ(pool.length(0), 1u);
  // The planners: monotone up to where the sizes fit, then SIZE_MAX (never a small wrap).
  const sparq::config cfg;
  EXPECT_LT(sparq::step_workspace_bytes(4, std::size_t{1} << 40, 128, cfg), smax);
  for (std::size_t S : {std::size_t{1} << 60, std::size_t{1} << 62, smax})
    EXPECT_EQ(sparq::step_workspace_bytes(4, S, 128, cfg), smax) << "S = " << S;
  EXPECT_EQ(sparq::step_workspace_bytes(big, 1024, 128, cfg), smax);
  EXPECT_EQ(sparq::dense_workspace_bytes(big, 128), smax);
  EXPECT_EQ(sparq::top_k_scratch_bytes(smax / 4), smax);
  EXPECT_LT(sparq::step_workspace_bytes(4, sparq::max_positions, 128, cfg), smax);
  // A saturated plan cannot become a small buffer.
  EXPECT_SPARQ_ERROR(sparq::workspace_buffer<>::for_step(4, smax, 128, cfg), "workspace_buffer");
  EXPECT_SPARQ_ERROR(sparq::workspace_buffer<>(smax - 1), "workspace_buffer");
  // checked_step: a view longer than 32-bit positions is named before anything is read.
  setup s;
  auto kv_long = s.head.view();
  kv_long.k.length = kv_long.v.length = kv_long.kt.length = past;
  EXPECT_SPARQ_ERROR(s.run(kv_long), "max_positions");
  // A zero group is named even when q is empty (null).
  EXPECT_SPARQ_ERROR(sparq::checked_step<float>(nullptr, 0, s.head.view(), s.cfg, s.workspace(), s.out.data()),
                     "group = 0");
  // batch_step: every size named; max_threads = 0 is an error, not one thread.
  sparq::config c = valid_config();
  EXPECT_SPARQ_ERROR(sparq::batch_step<float>(1, 1, 1, 64, 16, c, 0), "max_threads = 0");
  EXPECT_SPARQ_ERROR(sparq::batch_step<float>(1, 1, 1, past, 16, c, 1), "max_positions");
  EXPECT_SPARQ_ERROR(sparq::batch_step<float>(big, big, 1, 64, 16, c, 1), "more than the largest object");
  EXPECT_GE(sparq::batch_step<float>(1, 1, big, 64, 16, c, 1).workspace_bytes(), smax);
  EXPECT_NO_THROW(sparq::batch_step<float>(1, 1, 1, 64, 16, c, 1));
  EXPECT_NO_THROW(sparq::batch_step<float>(1, 1, 1, sparq::max_positions, 16, c, 1));
}

TEST(validation, checked_dense_step_names_bad_arguments) {
  rng r(403);
  const std::size_t S = 30, d = 8, g = 2;
  const auto head = random_head<sparq::f16>(r, S, d);
  const auto q = random_queries(r, g, d, 1.0f);
  std::vector<float> out(g * d);
  std::vector<unsigned char> ws(sparq::dense_workspace_bytes(g, d));
  const sparq::workspace w{ws.data(), ws.size()};
  auto k = head.k(), v = head.v();
  EXPECT_NO_THROW(sparq::checked_dense_step<sparq::f16>(q.data(), g, k, v, 0.0f, w, out.data()));
  EXPECT_SPARQ_ERROR(sparq::checked_dense_step<sparq::f16>(nullptr, g, k, v, 0.0f, w, out.data()), "q is null");
  EXPECT_SPARQ_ERROR(sparq::checked_dense_step<sparq::f16>(q.data(), g, k, v, 0.0f, w, nullptr), "out is null");
  EXPECT_SPARQ_ERROR(sparq::checked_dense_step<sparq::f16>(q.data(), 0, k, v, 0.0f, w, out.data()), "group");
  EXPECT_SPARQ_ERROR(sparq::checked_dense_step<sparq::f16>(q.data(), g, k, v, -1.0f, w, out.data()), "scale");
  EXPECT_SPARQ_ERROR(sparq::checked_dense_step<sparq::f16>(q.data(), g, k, v, std::numeric_limits<float>::quiet_NaN(), w, out.data()), "scale");
  EXPECT_SPARQ_ERROR(sparq::checked_dense_step<sparq::f16>(q.data(), g, k, v, std::numeric_limits<float>::infinity(), w, out.data()), "scale");
  EXPECT_SPARQ_ERROR(sparq::checked_dense_step<sparq::f16>(q.data(), g, k, v, 0.0f, {ws.data(), ws.size() - 1}, out.data()), "workspace.bytes");
  EXPECT_SPARQ_ERROR(sparq::checked_dense_step<sparq::f16>(q.data(), g, k, v, 0.0f, {nullptr, ws.size()}, out.data()), "workspace");
  auto bad = k;
  bad.data = nullptr;
  EXPECT_SPARQ_ERROR(sparq::checked_dense_step<sparq::f16>(q.data(), g, bad, v, 0.0f, w, out.data()), "k.data");
  bad = k;
  bad.row_stride = d - 1;
  EXPECT_SPARQ_ERROR(sparq::checked_dense_step<sparq::f16>(q.data(), g, bad, v, 0.0f, w, out.data()), "k.row_stride");
  auto badv = v;
  badv.data = nullptr;
  EXPECT_SPARQ_ERROR(sparq::checked_dense_step<sparq::f16>(q.data(), g, k, badv, 0.0f, w, out.data()), "v.data");
  badv = v;
  badv.row_stride = 1;
  EXPECT_SPARQ_ERROR(sparq::checked_dense_step<sparq::f16>(q.data(), g, k, badv, 0.0f, w, out.data()), "v.row_stride");
  badv = v;
  badv.length = S + 1;
  EXPECT_SPARQ_ERROR(sparq::checked_dense_step<sparq::f16>(q.data(), g, k, badv, 0.0f, w, out.data()), "v.length");
  bad = k;
  bad.length = 0;
  badv = v;
  badv.length = 0;
  EXPECT_SPARQ_ERROR(sparq::checked_dense_step<sparq::f16>(q.data(), g, bad, badv, 0.0f, w, out.data()), "length");
}

}  // namespace
