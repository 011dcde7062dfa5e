#pragma once
/// \file parallel.hpp
/// Batched, multi-threaded decode steps (SparQ or dense) over B sequences x H_kv KV heads x a
/// group of g query heads each, plus a small persistent thread pool to drive them.
///
/// Threading model (ggml style): the engine owns the threads. Every thread calls the same
/// function with its own index `ith` in [0, nth); the function does that thread's share. A
/// step is a short list of phases separated by barriers; `run_phase(p, ith, nth)` does one
/// phase, `compute(ith, nth, barrier)` does them all, calling the engine's barrier in between,
/// and `run(pool, nth, step)` drives everything with a sparq::thread_pool.
///
///   sparq::batch_step<sparq::f16> st(B, H_kv, g, capacity, d, cfg, /*max_threads*/ 8);
///   std::vector<std::byte> buf(st.workspace_bytes());      // plan once
///   sparq::thread_pool pool(4);
///   st.prepare(q, out, cache, {buf.data(), buf.size()}, 4);  // per step: bind q/out/cache
///   sparq::run(pool, 4, st);                                // out: [B][H_kv*g][d]
///
/// Per-sequence settings: built from a sparq::decode_policy instead of a config, the step
/// resolves each sequence's k and l from its length at prepare() (policy.resolve(S)) and runs
/// dense attention for sequences with policy.use_dense(S) (S < dense_below); the workspace is
/// planned at construction for the worst case up to the capacity, so prepare never allocates:
///
///   sparq::decode_policy pol;  pol.dense_below = 1024;
///   sparq::batch_step<sparq::f16> st(B, H_kv, g, capacity, d, pol, /*max_threads*/ 8);
///
/// Work items are (sequence, KV head) pairs. batch_mode::dense always runs two phases (a
/// barrier between): chunks of `parallel_chunk` positions of every KV head, a sequence's
/// heads over one chunk before the next chunk (units split over the threads), then each
/// item's log-sum-exp merge; its workspace holds one slot per item. Otherwise, with at
/// least as many items as threads each thread runs whole items (one phase, no barrier; the
/// top-k through the exact block-max prefilter of topk.hpp when k is small). With fewer
/// items than threads the step also splits over S: stage 1 and dense attention over fixed
/// chunks of `parallel_chunk` positions, top-k through per-chunk histograms merged by
/// integer sums, and the gathered attention over fixed blocks of `parallel_attend_block`
/// positions merged by log-sum-exp.
/// Both top-k routes return the same positions (the exact top-k of the same scores).
///
/// Determinism: an item is ALWAYS computed with those same chunks, blocks and merge orders,
/// whoever runs it, so the result is bit-identical for every thread count (the boundaries
/// depend on S and k only). The arithmetic differs from sparq::step (which does not chunk)
/// by rounding only.
///
/// Allocates: the plan allocates its item table once; prepare/run_phase never allocate (all
/// scratch is carved from the caller's workspace, planned for `max_threads`, and in dense
/// mode for every item). Throws: the constructor, prepare and run (sparq::error, on bad
/// sizes, an nth that differs from prepare's, or run without a prepared step: a prepare that
/// throws unbinds the previous one, see prepared()); the phases never: run_phase called
/// without a successful prepare, with another nth than prepare's (see threads()), ith >= nth
/// or p >= phases() prints the violated condition and aborts.
///
/// Traffic: the policy's calls are made by whichever thread does the work; a counting
/// policy (traffic_counter) is not thread-safe, so count with nth = 1.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

#include "config.hpp"
#include "detail/attend_kernel.hpp"
#include "detail/simd.hpp"
#include "detail/size_math.hpp"
#include "error.hpp"
#include "kv_cache.hpp"
#include "paged_kv_cache.hpp"
#include "paged_view.hpp"
#include "policy.hpp"
#include "stage1_scores.hpp"
#include "stage2_attend.hpp"
#include "stage3_reallocate.hpp"
#include "topk.hpp"
#include "traffic.hpp"
#include "view.hpp"
#include "workspace.hpp"

namespace sparq {

// ------------------------------------------------------------------------------------------
// thread_pool
// ------------------------------------------------------------------------------------------

/// A fixed set of worker threads that run `fn(ith)` for ith in [0, nth) (the calling thread
/// is ith = 0) and return when all are done. Workers spin briefly between runs (decode steps
/// come back to back), then sleep on a condition variable. Not reentrant: one run at a time.
class thread_pool {
 public:
  /// threads: total threads including the caller; 0 means std::thread::hardware_concurrency().
  explicit thread_pool(std::size_t threads = 0) {
    if (threads == 0) threads = std::max<std::size_t>(1, std::thread::hardware_concurrency());
    workers_.reserve(threads - 1);
    for (std::size_t i = 1; i < threads; ++i) workers_.emplace_back([this, i] { loop(i); });
  }
  ~thread_pool() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_.store(true, std::memory_order_relaxed);
      gen_.store(next_gen(0), std::memory_order_release);
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }
  thread_pool(const thread_pool&) = delete;
  thread_pool& operator=(const thread_pool&) = delete;

  /// Total threads (workers + the caller).
  std::size_t size() const noexcept { return workers_.size() + 1; }

  /// Calls fn(ith) once for every ith in [0, nth) and returns when all calls are done. The
  /// first min(nth, size()) run concurrently (fn(0) on this thread); with nth > size() each
  /// thread t runs ith = t, t + size(), ... in turn.
  template <class F>
  void run(std::size_t nth, F&& fn) {
    const std::size_t P = std::min(nth, size());
    if (P <= 1) {
      for (std::size_t ith = 0; ith < nth; ++ith) fn(ith);
      return;
    }
    auto strided = [&fn, nth, P](std::size_t t) {
      for (std::size_t ith = t; ith < nth; ith += P) fn(ith);
    };
    using Fn = decltype(strided);
    ctx_ = static_cast<void*>(&strided);
    call_ = [](void* c, std::size_t t) { (*static_cast<Fn*>(c))(t); };
    pending_.store(P - 1, std::memory_order_relaxed);
    {
      // The run's thread count travels in the same word as its generation, so a worker
      // without a share in this run (id >= P) never reads state the next run rewrites: an
      // idle worker that wakes late can neither run the next run's share under this run's
      // generation nor count it twice (which left pending_ wrapped and the caller spinning).
      std::lock_guard<std::mutex> lk(mu_);
      gen_.store(next_gen(P), std::memory_order_release);
    }
    cv_.notify_all();
    strided(0);
    for (std::size_t i = 0; pending_.load(std::memory_order_acquire) != 0; ++i) {
      relax();
      if ((i & 255) == 255) std::this_thread::yield();  // let an oversubscribed worker run
    }
  }

 private:
  static void relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#else
    std::this_thread::yield();
#endif
  }
  void loop(std::size_t id) {
    std::uint64_t seen = 0;
    for (;;) {
      // Spin up to ~1 ms for the next run, then sleep.
      auto t0 = std::chrono::steady_clock::now();
      std::uint64_t g;
      for (std::size_t i = 0;; ++i) {
        g = gen_.load(std::memory_order_acquire);
        if (g != seen) break;
        relax();
        if ((i & 1023) == 1023 && std::chrono::steady_clock::now() - t0 > std::chrono::milliseconds(1)) {
          std::unique_lock<std::mutex> lk(mu_);
          cv_.wait(lk, [&] { return gen_.load(std::memory_order_acquire) != seen; });
          g = gen_.load(std::memory_order_acquire);
          break;
        }
      }
      seen = g;
      if (stop_.load(std::memory_order_relaxed)) return;
      if (id < (g & 0xffffffffu)) {
        call_(ctx_, id);
        pending_.fetch_sub(1, std::memory_order_acq_rel);
      }
    }
  }
  // The next generation word: a run counter in the high 32 bits, the run's P in the low 32.
  // Only the calling thread writes gen_ (under mu_), so load + store is race-free.
  std::uint64_t next_gen(std::size_t P) const noexcept {
    return (((gen_.load(std::memory_order_relaxed) >> 32) + 1) << 32) |
           static_cast<std::uint64_t>(P);
  }

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<std::uint64_t> gen_{0};
  std::atomic<std::size_t> pending_{0};
  void (*call_)(void*, std::size_t) = nullptr;
  void* ctx_ = nullptr;
  std::atomic<bool> stop_{false};
};

// ------------------------------------------------------------------------------------------
// batch_step
// ------------------------------------------------------------------------------------------

/// Positions per stage-1 / dense chunk when a step is split over S (fixed: never nth-based).
inline constexpr std::size_t parallel_chunk = 4096;
/// Gathered positions per block of SparQ's exact attention (fixed).
inline constexpr std::size_t parallel_attend_block = 512;

enum class batch_mode { sparq, dense };

/// A planned batched step. q and out are [B][H_kv * g][d] fp32; query head j of a sequence
/// uses KV head j / g. Sequence b's length is the cache's length at prepare(); a sequence of
/// length 0 gets zero output. View: kv_head_view<const T> (contiguous caches, kv_cache) or
/// paged_kv_head_view<const T> (block tables, paged_kv_cache / page_pool + page_table); the
/// same data gives bit-identical results through either.
template <class T, class View = kv_head_view<const T>>
class batch_step {
  static_assert(std::is_same_v<View, kv_head_view<const T>> ||
                    std::is_same_v<View, paged_kv_head_view<const T>>,
                "batch_step<T, View>: View must be kv_head_view<const T> or "
                "paged_kv_head_view<const T>");
  static constexpr int bucket_shift = 32 - detail::topk_bucket_bits;

 public:
  /// Plans a step for up to `max_threads` threads (>= 1; a thread_pool's 0 for "all hardware
  /// threads" is not accepted here: pass pool.size()). Throws sparq::error naming a size
  /// that is zero, a capacity past max_positions, or arrays past the largest object.
  batch_step(std::size_t batch, std::size_t kv_heads, std::size_t group, std::size_t capacity,
             std::size_t head_dim, const config& cfg, std::size_t max_threads,
             batch_mode mode = batch_mode::sparq)
      : B_(checked_sizes(batch, kv_heads, group, capacity, head_dim, max_threads)), H_(kv_heads),
        g_(group), cap_(capacity), d_(head_dim), cfg_(cfg), max_threads_(max_threads), mode_(mode),
        views_(batch * kv_heads), len_(batch * kv_heads, 0), useq_(batch + 1, 0),
        k_(batch * kv_heads, cfg.top_k),
        l_(batch * kv_heads, cfg.local),
        dense_(batch * kv_heads, mode == batch_mode::dense ? 1 : 0) {
    cfg_.validate(head_dim);
    const bool any_sparq = mode_ == batch_mode::sparq, any_dense = mode_ == batch_mode::dense;
    plan(any_sparq, any_dense, any_sparq ? std::min(cfg_.top_k, cap_) : 0);
  }

  /// A step whose settings come from a decode_policy, per sequence, at prepare(): sequence b
  /// of length S uses dense attention when policy.use_dense(S), else SparQ with
  /// policy.resolve(S) (k from S with its clamps, l from k). The workspace is planned here
  /// for the worst case over every length up to `capacity`, so prepare() never allocates.
  /// Throws sparq::error on bad sizes or an invalid policy (policy.validate).
  batch_step(std::size_t batch, std::size_t kv_heads, std::size_t group, std::size_t capacity,
             std::size_t head_dim, const decode_policy& policy, std::size_t max_threads)
      : B_(checked_sizes(batch, kv_heads, group, capacity, head_dim, max_threads)), H_(kv_heads),
        g_(group), cap_(capacity), d_(head_dim), max_threads_(max_threads),
        mode_(batch_mode::sparq),
        policy_(policy), has_policy_(true), views_(batch * kv_heads), len_(batch * kv_heads, 0),
        useq_(batch + 1, 0),
        k_(batch * kv_heads, 0), l_(batch * kv_heads, 0), dense_(batch * kv_heads, 0) {
    policy_.validate(head_dim);
    // resolve(S) is non-decreasing in S (round, then clamps), so the longest SparQ
    // sequence has the most gathered positions; any length below dense_below is dense.
    cfg_ = policy_.resolve(cap_);
    const bool any_dense = policy_.dense_below > 0;
    const bool any_sparq = !policy_.use_dense(cap_);
    plan(any_sparq, any_dense, any_sparq ? std::min(cfg_.top_k, cap_) : 0);
  }

  /// True when built from a decode_policy.
  bool has_policy() const noexcept { return has_policy_; }
  /// The policy (meaningful when has_policy()).
  const decode_policy& policy() const noexcept { return policy_; }
  /// After prepare(): whether sequence b runs dense attention, and the k and l it runs SparQ
  /// with (k >= S means every position, i.e. exact dense attention through the SparQ path).
  bool sequence_dense(std::size_t b) const noexcept { return dense_[b * H_] != 0; }
  std::size_t sequence_top_k(std::size_t b) const noexcept { return k_[b * H_]; }
  std::size_t sequence_local(std::size_t b) const noexcept { return l_[b * H_]; }

 private:
  // Runs in the first member's initializer, before any member allocates; returns batch.
  static std::size_t checked_sizes(std::size_t batch, std::size_t kv_heads, std::size_t group,
                                   std::size_t capacity, std::size_t head_dim,
                                   std::size_t max_threads) {
    if (batch == 0) detail::fail("batch_step: batch = 0; allowed: >= 1");
    if (kv_heads == 0) detail::fail("batch_step: kv_heads = 0; allowed: >= 1");
    if (group == 0) detail::fail("batch_step: group = 0; allowed: >= 1");
    if (capacity == 0 || capacity > max_positions)
      detail::fail("batch_step: capacity = ", capacity, "; allowed: 1..", max_positions,
                   " (max_positions: positions are 32-bit)");
    if (head_dim == 0) detail::fail("batch_step: head_dim = 0; allowed: >= 1");
    if (max_threads == 0) detail::fail("batch_step: max_threads = 0; allowed: >= 1");
    detail::checked_product("batch_step: batch x kv_heads x sizeof(View)", batch, kv_heads,
                            sizeof(View));
    return batch;
  }

  // Lays out one slot. any_sparq: some item may run SparQ (needs the selection scratch);
  // any_dense: some item may run dense (needs a block state per chunk of S); max_npos: the
  // most positions a SparQ item may gather.
  void plan(bool any_sparq, bool any_dense, std::size_t max_npos) {
    scale_ = cfg_.scale_for(d_);
    items_ = B_ * H_;
    nc_ = (cap_ + parallel_chunk - 1) / parallel_chunk;
    const std::size_t nb_sparq = (max_npos + parallel_attend_block - 1) / parallel_attend_block;
    nb_ = std::max(any_dense ? nc_ : 0, any_sparq ? nb_sparq : 0);
    ld_ = detail::align_up(cap_, 16);
    // Sizes saturate at SIZE_MAX (absurd sizes then ask for more than any workspace).
    using detail::sat_mul;
    const std::size_t g = g_, d = d_, r = cfg_.rank, g4 = sat_mul(g_, 4);
    std::size_t at = 0;
    auto take = [&](std::size_t n) {
      const std::size_t o = at;
      at = detail::sat_add(at, detail::sat_align(n, 64));
      return o;
    };
    if (any_sparq) {
      o_.a = take(sat_mul(d, 4));
      o_.order = take(sat_mul(d, 4));
      o_.i1 = take(sat_mul(r, 4));
      o_.qs = take(sat_mul(g4, r));
      o_.topk = take(top_k_scratch_bytes(d));
      o_.e = take(sat_mul(g4, ld_));
      o_.sel = take(ld_ * 4);
      o_.cm = take(sat_mul(nc_, g4));
      o_.cz = take(sat_mul(nc_, g4));
      o_.cf = take(sat_mul(nc_, g4));
      o_.hist = take(nc_ * detail::topk_buckets * 4);
      o_.cnt = take(nc_ * 4);
      o_.cpos = take(ld_ * 4);
      o_.pos = take(ld_ * 4);
      o_.cand = take(ld_ * 8);
      o_.info = take(4 * 8);
    }
    bstride_ = detail::sat_align(sat_mul(sat_mul(g, detail::sat_add(d, 3)), 4), 64);
    o_.blocks = take(sat_mul(nb_, bstride_));
    slot_bytes_ = at;
    pstride_ = detail::sat_align(sat_mul(g4, detail::attend_block), 64);
  }

 public:
  std::size_t items() const noexcept { return items_; }
  std::size_t max_threads() const noexcept { return max_threads_; }

  /// Scratch bytes for any nth <= max_threads.
  std::size_t workspace_bytes() const noexcept {
    return detail::sat_add(detail::sat_add(detail::sat_mul(slots_for(max_threads_), slot_bytes_),
                                           detail::sat_mul(max_threads_, pstride_)),
                           64);
  }

  /// Binds one step's inputs; call from one thread before the phases. view_of(b, h) returns
  /// the View of sequence b, KV head h; its length is that head's S (the heads of a sequence
  /// may have different lengths, e.g. after per-head eviction; each is at most capacity).
  template <class ViewOf>
  void prepare_views(const float* q, float* out, ViewOf&& view_of, workspace ws,
                     std::size_t nth) {
    base_ = nullptr;  // until this prepare succeeds, run_phase aborts (contract violation)
    if (nth == 0 || nth > max_threads_)
      detail::fail("batch_step::prepare: nth = ", nth, "; allowed: 1 <= nth <= max_threads (",
                   max_threads_, ")");
    if (ws.data == nullptr) detail::fail("batch_step::prepare: workspace.data is null");
    if (ws.bytes < workspace_bytes())
      detail::fail("batch_step::prepare: workspace.bytes = ", ws.bytes, "; need >= ",
                   workspace_bytes(), " (workspace_bytes())");
    if (q == nullptr) detail::fail("batch_step::prepare: q is null");
    if (out == nullptr) detail::fail("batch_step::prepare: out is null");
    for (std::size_t b = 0; b < B_; ++b)
      for (std::size_t h = 0; h < H_; ++h) {
        const std::size_t it = b * H_ + h;
        views_[it] = view_of(b, h);
        const auto& kv = views_[it];
        const std::size_t S = kv.length();
        if (S > cap_)
          detail::fail("batch_step::prepare: sequence ", b, " head ", h, " length = ", S,
                       " > capacity (", cap_, ")");
        len_[it] = S;
        if (has_policy_) {
          const bool dn = policy_.use_dense(S);
          const config c = policy_.resolve(S);
          dense_[it] = dn ? 1 : 0;
          k_[it] = c.top_k;
          l_[it] = c.local;
        }
        if (S == 0) continue;
        if (kv.dim() != d_)
          detail::fail("batch_step::prepare: sequence ", b, " head ", h, " k.dim = ", kv.dim(),
                       "; must equal head_dim (", d_, ")");
        const bool stage1 = !dense_[it] && k_[it] < S;
        try {  // the checked_step checks, with the item named
          detail::check_view(kv.k, "k", S, d_);
          detail::check_view(kv.v, "v", S, d_);
          if (stage1) {
            if (kv.kt.data == nullptr)
              detail::fail("kt missing (kt.data is null) but this item runs SparQ stage 1");
            detail::check_view(kv.kt, "kt", S, d_);
          }
        } catch (const error& e) {
          detail::fail("batch_step::prepare: sequence ", b, " head ", h, ": ",
                       e.what() + 7);  // without the inner "sparq: "
        }
        if (stage1 && cfg_.reallocate && kv.v_mean == nullptr)
          detail::fail("batch_step::prepare: sequence ", b, " head ", h,
                       ": v_mean is null but reallocate is on");
      }
    q_ = q;
    out_ = out;
    base_ = detail::align64(ws.data);
    pscratch_ = base_ + slots_for(max_threads_) * slot_bytes_;
    nth_ = nth;
    split_ = items_ < nth;
    any_sparq_ = false;
    any_stage1_ = false;
    for (std::size_t it = 0; it < items_; ++it) {
      any_sparq_ = any_sparq_ || !dense_[it];
      any_stage1_ = any_stage1_ || (!dense_[it] && !full(it));
    }
    max_chunks_ = 0;
    for (std::size_t it = 0; it < items_; ++it)
      max_chunks_ = std::max(max_chunks_, (len_[it] + parallel_chunk - 1) / parallel_chunk);
    for (std::size_t b = 0; b < B_; ++b) {  // dense units before sequence b (its longest head)
      std::size_t nc = 0;
      for (std::size_t h = 0; h < H_; ++h) nc = std::max(nc, chunks(b * H_ + h));
      useq_[b + 1] = useq_[b] + nc * H_;
    }
  }

  /// prepare() for sequences 0..batch-1 of a sparq::paged_kv_cache (View must be paged).
  template <class Alloc>
  void prepare(const float* q, float* out, const paged_kv_cache<T, Alloc>& cache, workspace ws,
               std::size_t nth) {
    static_assert(std::is_same_v<View, paged_kv_head_view<const T>>,
                  "batch_step::prepare(paged_kv_cache): use batch_step<T, paged_kv_head_view<const T>>");
    base_ = nullptr;  // a failed prepare leaves no step bound (run_phase aborts)
    if (cache.max_sequences() < B_)
      detail::fail("batch_step::prepare: cache.max_sequences() = ", cache.max_sequences(),
                   "; must be >= batch (", B_, ")");
    check_cache_shape(cache.kv_heads(), cache.head_dim());
    prepare_views(q, out,
                  [&](std::size_t b, std::size_t h) {
                    View kv = cache.head(b, h);
                    if (!needs_kt(cache.length(b))) kv.kt = {};
                    return kv;
                  },
                  ws, nth);
  }

  /// prepare() for a sparq::kv_cache.
  template <class Alloc>
  void prepare(const float* q, float* out, const kv_cache<T, Alloc>& cache, workspace ws,
               std::size_t nth) {
    static_assert(std::is_same_v<View, kv_head_view<const T>>,
                  "batch_step::prepare(kv_cache): use batch_step<T> (contiguous views)");
    base_ = nullptr;  // a failed prepare leaves no step bound (run_phase aborts)
    if (cache.batch() != B_)
      detail::fail("batch_step::prepare: cache.batch() = ", cache.batch(), "; must equal batch (",
                   B_, ")");
    check_cache_shape(cache.kv_heads(), cache.head_dim());
    prepare_views(q, out,
                  [&](std::size_t b, std::size_t h) {
                    if (!needs_kt(cache.length(b)) || !cache.has_kt())
                      return kv_head_view<const T>{cache.keys(b, h), {}, cache.values(b, h),
                                                   cache.v_mean(b, h)};
                    return cache.head(b, h);
                  },
                  ws, nth);
  }

 private:
  // Whether a sequence of length S runs stage 1 (so its view needs Kt).
  bool needs_kt(std::size_t S) const noexcept {
    return mode_ != batch_mode::dense && !(has_policy_ && policy_.use_dense(S));
  }
  void check_cache_shape(std::size_t kv_heads, std::size_t head_dim) const {
    if (kv_heads != H_)
      detail::fail("batch_step::prepare: cache.kv_heads() = ", kv_heads,
                   "; must equal kv_heads (", H_, ")");
    if (head_dim != d_)
      detail::fail("batch_step::prepare: cache.head_dim() = ", head_dim,
                   "; must equal head_dim (", d_, ")");
  }

 public:

  /// Phases of the prepared step: 2 in batch_mode::dense (chunks of every head, then the
  /// merges); otherwise 1 when every thread runs whole items (items >= nth), more when the
  /// items are split over S.
  std::size_t phases() const noexcept {
    if (mode_ == batch_mode::dense) return 2;
    if (!split_) return 1;
    return any_sparq_ ? 9 : 2;
  }

  /// The thread count prepare() was given: every run_phase call must pass it.
  std::size_t threads() const noexcept { return nth_; }

  /// Whether a step is bound: the last prepare() succeeded (false before any prepare() and
  /// after one that threw).
  bool prepared() const noexcept { return base_ != nullptr; }

  /// Does thread ith's share of phase p. Every thread must finish phase p before any starts
  /// phase p + 1. Requires a successful prepare(), nth == threads() (prepare's nth), ith < nth
  /// and p < phases(); otherwise prints the violated condition and aborts (a different nth
  /// would send threads to scratch slots that were never planned).
  template <class Traffic = no_traffic>
  void run_phase(std::size_t p, std::size_t ith, std::size_t nth, Traffic& traffic) noexcept {
    if (base_ == nullptr)
      detail::contract_violation("batch_step::run_phase before a successful prepare()");
    if (nth != nth_)
      detail::contract_violation("batch_step::run_phase: nth differs from prepare()'s nth", nth,
                                 nth_);
    if (ith >= nth) detail::contract_violation("batch_step::run_phase: ith >= nth", ith, nth);
    if (p >= phases())
      detail::contract_violation("batch_step::run_phase: phase p >= phases()", p, phases());
    if (mode_ == batch_mode::dense) {
      run_dense_phase(p, ith, nth, traffic);
      return;
    }
    if (!split_) {
      const std::size_t i0 = ith * items_ / nth, i1 = (ith + 1) * items_ / nth;
      for (std::size_t it = i0; it < i1; ++it) whole_item(it, ith, ith, traffic);
      return;
    }
    const std::size_t mc = max_chunks_, mb = nb_;
    auto units = [&](std::size_t per_item, auto&& f) {
      const std::size_t U = items_ * per_item;
      const std::size_t u0 = ith * U / nth, u1 = (ith + 1) * U / nth;
      for (std::size_t u = u0; u < u1; ++u) f(u / per_item, u % per_item);
    };
    if (!any_sparq_) {
      if (p == 0) units(mc, [&](std::size_t it, std::size_t c) { dense_block(it, it, c, ith, traffic); });
      else units(1, [&](std::size_t it, std::size_t) { finish(it, it, traffic); });
      return;
    }
    // Dense items (policy) do their chunks in phase 1 and merge in phase 8; the SparQ-only
    // functions return at once for them.
    // The stage marks a timing policy sees: scores (phases 0-1; dense items mark dense),
    // select (2-6), attend (7), reallocate (8, when an item blends).
    if (p == 0 && any_stage1_) traffic.begin(stage::scores);  // else all k >= S: no stage 1
    if (p >= 2 && p <= 6) traffic.begin(stage::select);
    if (p == 7) traffic.begin(stage::attend);
    switch (p) {
      case 0: units(1, [&](std::size_t it, std::size_t) { prologue(it, it); }); break;
      case 1:
        units(mc, [&](std::size_t it, std::size_t c) {
          if (dense_[it]) dense_block(it, it, c, ith, traffic);
          else stage1_chunk(it, it, c, traffic);
        });
        break;
      case 2: units(1, [&](std::size_t it, std::size_t) { reduce1(it, it); }); break;
      case 3: units(mc, [&](std::size_t it, std::size_t c) { sel_chunk(it, it, c); }); break;
      case 4: units(1, [&](std::size_t it, std::size_t) { bucket(it, it); }); break;
      case 5: units(mc, [&](std::size_t it, std::size_t c) { collect_chunk(it, it, c); }); break;
      case 6: units(1, [&](std::size_t it, std::size_t) { finalize(it, it); }); break;
      case 7: units(mb, [&](std::size_t it, std::size_t j) { attend_block(it, it, j, ith, traffic); }); break;
      default: units(1, [&](std::size_t it, std::size_t) { finish(it, it, traffic); }); break;
    }
  }
  void run_phase(std::size_t p, std::size_t ith, std::size_t nth) noexcept {
    no_traffic t;
    run_phase(p, ith, nth, t);
  }

  /// All phases for thread ith; barrier() must block until all nth threads have called it.
  template <class Barrier>
  void compute(std::size_t ith, std::size_t nth, Barrier&& barrier) noexcept {
    const std::size_t np = phases();
    for (std::size_t p = 0; p < np; ++p) {
      if (p) barrier();
      run_phase(p, ith, nth);
    }
  }

 private:
  struct offsets {
    std::size_t a = 0, order = 0, i1 = 0, qs = 0, topk = 0, e = 0, sel = 0, cm = 0, cz = 0,
                cf = 0, hist = 0, cnt = 0, cpos = 0, pos = 0, cand = 0, info = 0, blocks = 0;
  };
  // info[0] = bucket, info[1] = need, info[2] = n positions, info[3] = rest.

  // batch_mode::dense. Phase 0: the units (sequence b, chunk c, KV head h), in that order,
  // split into nth contiguous ranges; a unit folds chunk c of item (b, h) into its own block
  // state. Phase 1: each item's log-sum-exp merge. A thread thus visits every KV head of a
  // sequence over one chunk before the next chunk: when heads share memory pages (a token-
  // major [S][H][d] cache), the heads revisit the same window of 4096 tokens one after
  // another instead of each walking the whole cache (page and DRAM locality; measured in
  // commit de9eaa2). Same arithmetic per item as any other order, so the same bits.
  template <class Traffic>
  void run_dense_phase(std::size_t p, std::size_t ith, std::size_t nth,
                       Traffic& traffic) noexcept {
    traffic.begin(stage::dense);
    if (p == 1) {
      const std::size_t i0 = ith * items_ / nth, i1 = (ith + 1) * items_ / nth;
      for (std::size_t it = i0; it < i1; ++it) finish(it, it, traffic);
      return;
    }
    const std::size_t U = useq_[B_];
    const std::size_t u0 = ith * U / nth, u1 = (ith + 1) * U / nth;
    std::size_t b = 0;
    for (std::size_t u = u0; u < u1; ++u) {
      while (u >= useq_[b + 1]) ++b;
      const std::size_t r = u - useq_[b];
      const std::size_t it = b * H_ + r % H_;
      dense_block(it, it, r / H_, ith, traffic);
    }
  }

  std::size_t slots_for(std::size_t nth) const noexcept {
    // Dense mode and split (items < nth): one slot per item. Whole items: one per thread.
    return mode_ == batch_mode::dense ? items_ : std::min(items_, nth);
  }
  unsigned char* slot(std::size_t s) const noexcept { return base_ + s * slot_bytes_; }
  template <class U>
  U* at(std::size_t s, std::size_t off) const noexcept {
    return reinterpret_cast<U*>(slot(s) + off);
  }
  float* block_state(std::size_t s, std::size_t j) const noexcept {
    return reinterpret_cast<float*>(slot(s) + o_.blocks + j * bstride_);
  }
  const float* q_of(std::size_t it) const noexcept { return q_ + it * g_ * d_; }
  float* out_of(std::size_t it) const noexcept { return out_ + it * g_ * d_; }
  bool full(std::size_t it) const noexcept { return k_[it] >= len_[it]; }
  std::size_t chunks(std::size_t it) const noexcept {
    return (len_[it] + parallel_chunk - 1) / parallel_chunk;
  }
  std::size_t npos(std::size_t it) const noexcept { return std::min(k_[it], len_[it]); }

  template <class Traffic>
  void whole_item(std::size_t it, std::size_t s, std::size_t ith, Traffic& traffic) noexcept {
    const std::size_t nc = chunks(it);
    if (dense_[it]) {
      for (std::size_t c = 0; c < nc; ++c) dense_block(it, s, c, ith, traffic);
      finish(it, s, traffic);
      return;
    }
    if (full(it)) {  // k >= S: every position, no stage 1 (as sparq::step marks it)
      traffic.begin(stage::select);
      finalize(it, s);
    } else {
      traffic.begin(stage::scores);
      prologue(it, s);
      for (std::size_t c = 0; c < nc; ++c) stage1_chunk(it, s, c, traffic);
      traffic.begin(stage::select);
      reduce1(it, s);
      if (!select_whole(it, s)) {
        for (std::size_t c = 0; c < nc; ++c) sel_chunk(it, s, c);
        bucket(it, s);
        for (std::size_t c = 0; c < nc; ++c) collect_chunk(it, s, c);
        finalize(it, s);
      }
    }
    const std::size_t nb = (npos(it) + parallel_attend_block - 1) / parallel_attend_block;
    for (std::size_t j = 0; j < nb; ++j) attend_block(it, s, j, ith, traffic);
    finish(it, s, traffic);
  }

  // i1 and the scaled query components.
  void prologue(std::size_t it, std::size_t s) noexcept {
    if (dense_[it] || len_[it] == 0 || full(it)) return;
    const std::size_t r = cfg_.rank;
    std::uint32_t* i1 = at<std::uint32_t>(s, o_.i1);
    choose_components(q_of(it), g_, d_, r, at<float>(s, o_.a), at<std::uint32_t>(s, o_.order),
                      slot(s) + o_.topk, i1);
    scaled_query_components(q_of(it), g_, d_, i1, r, scale_, at<float>(s, o_.qs));
  }

  // Approximate logits over chunk c, the chunk's max per head, exp(logit - chunk max) and
  // the chunk's sum per head.
  template <class Traffic>
  void stage1_chunk(std::size_t it, std::size_t s, std::size_t c, Traffic& traffic) noexcept {
    const std::size_t S = len_[it];
    if (dense_[it] || full(it) || c * parallel_chunk >= S) return;
    const std::size_t s0 = c * parallel_chunk, s1 = std::min(S, s0 + parallel_chunk);
    const std::size_t g = g_;
    float* e = at<float>(s, o_.e);
    float* cm = at<float>(s, o_.cm) + c * g;
    float* cz = at<float>(s, o_.cz) + c * g;
    for (std::size_t h = 0; h < g; ++h) cm[h] = -std::numeric_limits<float>::infinity();
    traffic.begin(stage::scores);
    approximate_logits(at<float>(s, o_.qs), g, cfg_.rank, views_[it].kt,
                       at<std::uint32_t>(s, o_.i1), s0, s1, e, ld_, cm, traffic);
    for (std::size_t h = 0; h < g; ++h)
      cz[h] = detail::exp_shift_sum(e + h * ld_ + s0, s1 - s0, cm[h]);
  }

  // Global max and sum per head; per-chunk factors exp(m_c - m) / z.
  void reduce1(std::size_t it, std::size_t s) noexcept {
    if (dense_[it] || len_[it] == 0 || full(it)) return;
    const std::size_t g = g_, nc = chunks(it);
    const float* cm = at<float>(s, o_.cm);
    const float* cz = at<float>(s, o_.cz);
    float* cf = at<float>(s, o_.cf);
    for (std::size_t h = 0; h < g; ++h) {
      float m = -std::numeric_limits<float>::infinity();
      for (std::size_t c = 0; c < nc; ++c) m = std::max(m, cm[c * g + h]);
      float z = 0.0f;
      for (std::size_t c = 0; c < nc; ++c) z += cz[c * g + h] * std::exp(cm[c * g + h] - m);
      const float inv = 1.0f / z;
      for (std::size_t c = 0; c < nc; ++c) cf[c * g + h] = std::exp(cm[c * g + h] - m) * inv;
    }
  }

  // sel over chunk c and the histogram of its keys (positions before the local window).
  void sel_chunk(std::size_t it, std::size_t s, std::size_t c) noexcept {
    const std::size_t S = len_[it];
    if (dense_[it] || full(it) || c * parallel_chunk >= S) return;
    const std::size_t s0 = c * parallel_chunk, s1 = std::min(S, s0 + parallel_chunk);
    const std::size_t rest = S - l_[it];
    std::uint32_t* hist = at<std::uint32_t>(s, o_.hist) + c * detail::topk_buckets;
    detail::sel_histogram(at<float>(s, o_.e), g_, ld_, at<float>(s, o_.cf) + c * g_, s0, s1,
                          rest, at<float>(s, o_.sel), hist);
  }

  // The positions of one item run by one thread: the same set as sel_chunk .. finalize give
  // (the exact top-k of the same sel values, lower index winning ties), found through an
  // exact prefilter instead of a histogram of every value: the lowest key of the bucket of
  // the want-th largest block maximum of sel bounds the want-th largest value from below,
  // so only the values reaching it (~1.2x want at k = S/16) are collected and ranked
  // (detail::block_max_threshold, keep_best). False (nothing done) when the prefilter would
  // not pay.
  bool select_whole(std::size_t it, std::size_t s) noexcept {
    const std::size_t S = len_[it];
    if (dense_[it] || S == 0 || full(it)) return false;
    const std::size_t rest = S - l_[it], want = k_[it] - l_[it];
    const std::size_t V = want == 0 ? 0 : detail::prefilter_vectors(rest, want);
    if (V == 0) return false;
    float* sel = at<float>(s, o_.sel);
    const float* e = at<float>(s, o_.e);
    const float* cf = at<float>(s, o_.cf);
    for (std::size_t c = 0, nc = chunks(it); c < nc; ++c) {
      const std::size_t s0 = c * parallel_chunk, s1 = std::min(rest, s0 + parallel_chunk);
      if (s0 < s1) detail::sel_values(e, g_, ld_, cf + c * g_, s0, s1, sel);
    }
    const std::uint32_t lo =
        detail::block_max_threshold(sel, rest, want, V, at<std::uint32_t>(s, o_.cpos));
    std::uint32_t* pos = at<std::uint32_t>(s, o_.pos);
    std::size_t m = detail::collect_key_at_least(sel, 0, rest, lo, pos);
    m = detail::keep_best(sel, pos, m, want, at<std::uint64_t>(s, o_.cand));
    for (std::size_t p = rest; p < S; ++p) pos[m++] = static_cast<std::uint32_t>(p);
    at<std::uint64_t>(s, o_.info)[2] = m;
    return true;
  }

  void bucket(std::size_t it, std::size_t s) noexcept {
    const std::size_t S = len_[it];
    if (dense_[it] || S == 0 || full(it)) return;
    std::uint64_t* info = at<std::uint64_t>(s, o_.info);
    const std::size_t want = k_[it] - l_[it];
    const std::size_t rest = S - l_[it];
    info[3] = rest;
    if (want == 0) {
      info[0] = detail::topk_buckets;  // nothing passes
      info[1] = 0;
      return;
    }
    const std::size_t nc = chunks(it);
    const std::uint32_t* hist = at<std::uint32_t>(s, o_.hist);
    std::size_t above = 0, b = detail::topk_buckets;
    while (b-- > 0) {
      std::size_t cnt = 0;
      for (std::size_t c = 0; c < nc; ++c) cnt += hist[c * detail::topk_buckets + b];
      if (above + cnt >= want) break;
      above += cnt;
    }
    info[0] = b;
    info[1] = want - above;
  }

  void collect_chunk(std::size_t it, std::size_t s, std::size_t c) noexcept {
    const std::size_t S = len_[it];
    if (dense_[it] || full(it) || c * parallel_chunk >= S) return;
    const std::uint64_t* info = at<std::uint64_t>(s, o_.info);
    const std::size_t rest = info[3];
    const std::size_t s0 = c * parallel_chunk, s1 = std::min(rest, s0 + parallel_chunk);
    std::uint32_t* cnt = at<std::uint32_t>(s, o_.cnt) + c;
    if (s0 >= s1 || info[0] >= detail::topk_buckets) {
      *cnt = 0;
      return;
    }
    *cnt = static_cast<std::uint32_t>(detail::collect_at_or_above(
        at<float>(s, o_.sel), s0, s1, static_cast<std::uint32_t>(info[0]),
        at<std::uint32_t>(s, o_.cpos) + s0));
  }

  void finalize(std::size_t it, std::size_t s) noexcept {
    const std::size_t S = len_[it];
    if (dense_[it] || S == 0) return;
    std::uint32_t* pos = at<std::uint32_t>(s, o_.pos);
    std::uint64_t* info = at<std::uint64_t>(s, o_.info);
    if (full(it)) {
      for (std::size_t i = 0; i < S; ++i) pos[i] = static_cast<std::uint32_t>(i);
      info[2] = S;
      return;
    }
    const std::size_t nc = chunks(it);
    const std::uint32_t* cnt = at<std::uint32_t>(s, o_.cnt);
    const std::uint32_t* cpos = at<std::uint32_t>(s, o_.cpos);
    std::size_t m = 0;
    for (std::size_t c = 0; c < nc; ++c) {
      std::memcpy(pos + m, cpos + c * parallel_chunk, cnt[c] * sizeof(std::uint32_t));
      m += cnt[c];
    }
    const std::size_t want = k_[it] - l_[it];
    if (m > want)
      m = detail::resolve_bucket(at<float>(s, o_.sel), pos, m, static_cast<std::uint32_t>(info[0]),
                                 info[1], at<std::uint64_t>(s, o_.cand));
    for (std::size_t p = info[3]; p < S; ++p) pos[m++] = static_cast<std::uint32_t>(p);
    info[2] = m;
  }

  template <class Traffic>
  void attend_block(std::size_t it, std::size_t s, std::size_t j, std::size_t ith,
                    Traffic& traffic) noexcept {
    const std::size_t S = len_[it];
    if (dense_[it] || S == 0) return;
    const std::size_t n = npos(it);
    const std::size_t p0 = j * parallel_attend_block;
    if (p0 >= n) return;
    const std::size_t nb = std::min(parallel_attend_block, n - p0);
    const std::size_t g = g_, d = d_;
    float* bs = block_state(s, j);
    const detail::online_state st{bs, bs + g * d, bs + g * d + g};
    float* ap = bs + g * d + 2 * g;
    float* p = reinterpret_cast<float*>(pscratch_ + ith * pstride_);
    const std::uint32_t* pos = at<std::uint32_t>(s, o_.pos) + p0;
    traffic.begin(stage::attend);
    detail::online_init(st, g, d);
    const auto& kv = views_[it];
    detail::dispatch_head_dim(d, [&](auto D) {
      detail::attend_online<decltype(D)::value>(q_of(it), g, d, scale_, kv.k, kv.v,
                                                detail::indexed_positions{pos}, nb, st, p,
                                                traffic);
    });
    if (full(it)) return;
    const float* e = at<float>(s, o_.e);
    const float* cf = at<float>(s, o_.cf);
    for (std::size_t h = 0; h < g; ++h) {
      float a = 0.0f;
      for (std::size_t i = 0; i < nb; ++i)
        a += e[h * ld_ + pos[i]] * cf[(pos[i] / parallel_chunk) * g + h];
      ap[h] = a;
    }
  }

  template <class Traffic>
  void dense_block(std::size_t it, std::size_t s, std::size_t c, std::size_t ith,
                   Traffic& traffic) noexcept {
    const std::size_t S = len_[it];
    if (c * parallel_chunk >= S) return;
    const std::size_t s0 = c * parallel_chunk, n = std::min(parallel_chunk, S - s0);
    const std::size_t g = g_, d = d_;
    float* bs = block_state(s, c);
    const detail::online_state st{bs, bs + g * d, bs + g * d + g};
    float* p = reinterpret_cast<float*>(pscratch_ + ith * pstride_);
    traffic.begin(stage::dense);
    detail::online_init(st, g, d);
    const auto& kv = views_[it];
    detail::dispatch_head_dim(d, [&](auto D) {
      detail::attend_online<decltype(D)::value>(q_of(it), g, d, scale_, kv.k, kv.v,
                                                detail::contiguous_positions{s0}, n, st, p,
                                                traffic);
    });
  }

  // Log-sum-exp merge of the blocks in block order, fetched mass, reallocation.
  template <class Traffic>
  void finish(std::size_t it, std::size_t s, Traffic& traffic) noexcept {
    const std::size_t S = len_[it], g = g_, d = d_;
    float* out = out_of(it);
    if (S == 0) {
      for (std::size_t i = 0; i < g * d; ++i) out[i] = 0.0f;
      return;
    }
    const bool dense = dense_[it] != 0;
    const std::size_t n = dense ? S : npos(it);
    const std::size_t bsz = dense ? parallel_chunk : parallel_attend_block;
    const std::size_t nb = (n + bsz - 1) / bsz;
    const bool blend = !dense && !full(it) && cfg_.reallocate;
    if (blend) {
      traffic.begin(stage::reallocate);
      traffic.read(arena::v_mean, views_[it].v_mean, d * sizeof(float));
    }
    for (std::size_t h = 0; h < g; ++h) {
      float m = -std::numeric_limits<float>::infinity();
      for (std::size_t j = 0; j < nb; ++j) m = std::max(m, block_state(s, j)[g * d + h]);
      float z = 0.0f, alpha = 0.0f;
      float* o = out + h * d;
      for (std::size_t i = 0; i < d; ++i) o[i] = 0.0f;
      for (std::size_t j = 0; j < nb; ++j) {
        const float* bs = block_state(s, j);
        const float bz = bs[g * d + g + h];
        if (bz == 0.0f) continue;
        const float c = std::exp(bs[g * d + h] - m);
        z += bz * c;
        const float* acc = bs + h * d;
        for (std::size_t i = 0; i < d; ++i) o[i] += acc[i] * c;
        if (!dense) alpha += bs[g * d + 2 * g + h];
      }
      const float inv = z > 0.0f ? 1.0f / z : 0.0f;
      for (std::size_t i = 0; i < d; ++i) o[i] *= inv;
      if (blend) {
        alpha = alpha < 1.0f ? alpha : 1.0f;
        const float* vm = views_[it].v_mean;
        const float b = 1.0f - alpha;
        for (std::size_t i = 0; i < d; ++i) o[i] = alpha * o[i] + b * vm[i];
      }
    }
  }

  std::size_t B_, H_, g_, cap_, d_;
  config cfg_;
  std::size_t max_threads_;
  batch_mode mode_;
  decode_policy policy_;
  bool has_policy_ = false;
  std::vector<View> views_;
  std::vector<std::size_t> len_;
  // Dense units (sequence, chunk, KV head) before sequence b: useq_[b] (batch_mode::dense).
  std::vector<std::size_t> useq_;
  // Per item (sequence, KV head): k, l, and whether it runs dense (fixed, or resolved by the
  // policy at prepare()).
  std::vector<std::size_t> k_, l_;
  std::vector<unsigned char> dense_;
  float scale_ = 1.0f;
  std::size_t items_ = 0, nc_ = 0, nb_ = 0, ld_ = 0, bstride_ = 0, slot_bytes_ = 0, pstride_ = 0;
  offsets o_;
  // Bound by prepare().
  const float* q_ = nullptr;
  float* out_ = nullptr;
  unsigned char* base_ = nullptr;
  unsigned char* pscratch_ = nullptr;
  std::size_t nth_ = 1, max_chunks_ = 0;
  bool split_ = false, any_sparq_ = true, any_stage1_ = true;
};

/// Runs every phase of a prepared step with the nth given to prepare(), on the pool's threads
/// (if the pool has fewer than nth threads, each runs several shares; same result).
/// Throws sparq::error when no step is prepared (none was, or the last prepare() threw) or
/// nth is not the nth given to prepare().
template <class T, class View>
void run(thread_pool& pool, std::size_t nth, batch_step<T, View>& st) {
  if (!st.prepared())
    detail::fail("run: the batch_step is not prepared (no prepare() yet, or the last one threw)");
  if (nth != st.threads())
    detail::fail("run: nth = ", nth, "; must equal the nth given to batch_step::prepare (",
                 st.threads(), ")");
  const std::size_t np = st.phases();
  for (std::size_t p = 0; p < np; ++p)
    pool.run(nth, [&](std::size_t ith) { st.run_phase(p, ith, nth); });
}

}  // namespace sparq
