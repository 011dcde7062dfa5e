// tiny_lm: runs tiny-code-lm byte by byte with a KV cache (decode style) and reports bits per
// byte, or checks the model README's reference logits, with a choice of decode attention:
// the example's own dense fp32 attention, sparq's dense_step, or SparQ (sparq::step).
//
//   tiny_lm MODEL_DIR [TEXT_FILE] [--check-reference] [--max-tokens N]
//           [--attention dense|sparq-dense|sparq] [--kv-dtype f32|f16|bf16]
//           [--rank R] [--top-k K | --top-k-frac F [--top-k-min M]]
//           [--local L | --local-frac F] [--no-reallocate] [--dense-below N] [--page-size P]
//           [--compare-dense TOL]

#include "attention.hpp"
#include "model.hpp"
#include "sparq_attention.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <exception>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

namespace {

using tiny_lm::attention_backend;
using tiny_lm::model;
using tiny_lm::vector;

struct run_result {
    double bits_per_byte = 0.0;  ///< mean next-byte cross entropy / ln 2 over positions 0..n-2
    int tokens = 0;              ///< tokens decoded
    double seconds = 0.0;        ///< wall time of the decode loop
    double cpu_seconds = 0.0;    ///< CPU time of this thread in the decode loop (robust to load)
};

/// CPU time consumed by the calling thread (the decode loop is single-threaded).
double thread_cpu_seconds() {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

/// Wraps a backend and adds up the thread CPU time spent in its append() and attend() calls,
/// so attention cost can be told apart from the (dominant) weight matrix-vector products.
class timed_attention final : public attention_backend {
public:
    explicit timed_attention(attention_backend& inner) : inner_(inner) {}
    void reset() override {
        inner_.reset();
        append_seconds = attend_seconds = 0.0;
    }
    void append(int layer, const float* k, const float* v) override {
        const double t = thread_cpu_seconds();
        inner_.append(layer, k, v);
        append_seconds += thread_cpu_seconds() - t;
    }
    void attend(int layer, const float* q, float* out) override {
        const double t = thread_cpu_seconds();
        inner_.attend(layer, q, out);
        attend_seconds += thread_cpu_seconds() - t;
    }
    double append_seconds = 0.0, attend_seconds = 0.0;

private:
    attention_backend& inner_;
};

/// Feeds `bytes` one token at a time from position 0 (after resetting `attn`), calling
/// `on_logits(position, logits)` after each token.
run_result run_sequence(model& m, attention_backend& attn, const std::vector<std::uint8_t>& bytes,
                        const std::function<void(int, const vector&)>& on_logits = {}) {
    attn.reset();
    run_result r;
    double nll = 0.0;  // nats; double because it sums thousands of terms
    const auto start = std::chrono::steady_clock::now();
    const double cpu_start = thread_cpu_seconds();
    const int n = static_cast<int>(bytes.size());
    for (int pos = 0; pos < n; ++pos) {
        const vector& logits = m.forward(bytes[static_cast<std::size_t>(pos)], pos, attn);
        if (on_logits) on_logits(pos, logits);
        if (pos + 1 < n) {
            // -log softmax(logits)[next], via log-sum-exp around the max.
            const double mx = logits.maxCoeff();
            double sum = 0.0;
            for (Eigen::Index i = 0; i < logits.size(); ++i) sum += std::exp(logits[i] - mx);
            nll += mx + std::log(sum) - logits[bytes[static_cast<std::size_t>(pos) + 1]];
        }
    }
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    r.cpu_seconds = thread_cpu_seconds() - cpu_start;
    r.tokens = n;
    r.bits_per_byte = n > 1 ? nll / (n - 1) / std::log(2.0) : 0.0;
    return r;
}

// ---- --check-reference: the table in the model README -------------------------------------

constexpr char reference_text[] =
    "def fibonacci(n):\n    if n < 2:\n        return n\n"
    "    return fibonacci(n - 1) + fibonacci(n - 2)\n";
static_assert(sizeof(reference_text) - 1 == 96, "the README's reference text is 96 bytes");

struct reference_row {
    int position;
    float logit_space;  // logit[32]
    float logit_e;      // logit[101]
    std::array<int, 3> top_bytes;
    std::array<float, 3> top_logits;
};

constexpr reference_row reference_rows[] = {
    {0, 2.9396f, 3.5352f, {101, 32, 105}, {3.5352f, 2.9396f, 2.4596f}},
    {1, 2.5702f, -0.0878f, {102, 110, 114}, {4.2307f, 3.6946f, 3.5767f}},
    {2, 5.7937f, -0.2980f, {32, 97, 105}, {5.7937f, 4.4098f, 3.0859f}},
    {15, 9.2704f, -2.4028f, {58, 32, 10}, {13.3665f, 9.2704f, 6.1629f}},
    {95, 6.9717f, 2.5335f, {10, 32, 0}, {10.3605f, 6.9717f, 6.7495f}},
};
constexpr double reference_bits_per_byte = 0.9272;
constexpr double logit_tolerance = 2e-3;  // the README rounds to 1e-4; fp32 summation order adds more
constexpr double bpb_tolerance = 1e-3;

/// Indices of the three largest logits, largest first; the lower byte wins exact ties.
std::array<int, 3> top3(const vector& logits) {
    std::vector<int> idx(static_cast<std::size_t>(logits.size()));
    for (std::size_t i = 0; i < idx.size(); ++i) idx[i] = static_cast<int>(i);
    std::partial_sort(idx.begin(), idx.begin() + 3, idx.end(), [&](int a, int b) {
        return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    });
    return {idx[0], idx[1], idx[2]};
}

int check_reference(model& m, attention_backend& attn, const std::string& attention_name) {
    const std::vector<std::uint8_t> bytes(reference_text, reference_text + 96);
    std::vector<vector> captured(std::size(reference_rows));
    const run_result r = run_sequence(m, attn, bytes, [&](int pos, const vector& logits) {
        for (std::size_t i = 0; i < std::size(reference_rows); ++i)
            if (reference_rows[i].position == pos) captured[i] = logits;
    });

    int failures = 0;
    std::printf("tiny_lm reference check (README fibonacci text, 96 bytes, attention: %s)\n",
                attention_name.c_str());
    std::printf("%-4s %-14s %12s %12s %10s  %s\n", "pos", "quantity", "expected", "got", "|diff|",
                "result");
    auto row = [&](int pos, const std::string& what, double expected, double got, double tol) {
        const double diff = std::fabs(expected - got);
        const bool ok = diff <= tol;  // NaN fails
        failures += ok ? 0 : 1;
        std::printf("%-4d %-14s %12.4f %12.4f %10.2e  %s\n", pos, what.c_str(), expected, got, diff,
                    ok ? "PASS" : "FAIL");
    };
    for (std::size_t i = 0; i < std::size(reference_rows); ++i) {
        const reference_row& ref = reference_rows[i];
        const vector& logits = captured[i];
        row(ref.position, "logit[32]", ref.logit_space, logits[32], logit_tolerance);
        row(ref.position, "logit[101]", ref.logit_e, logits[101], logit_tolerance);
        const std::array<int, 3> top = top3(logits);
        for (int j = 0; j < 3; ++j) {
            const bool same_byte = top[static_cast<std::size_t>(j)] == ref.top_bytes[static_cast<std::size_t>(j)];
            failures += same_byte ? 0 : 1;
            std::printf("%-4d %-14s %12d %12d %10s  %s\n", ref.position,
                        ("top" + std::to_string(j + 1) + " byte").c_str(),
                        ref.top_bytes[static_cast<std::size_t>(j)], top[static_cast<std::size_t>(j)],
                        "", same_byte ? "PASS" : "FAIL");
            // Compare the logit of the expected byte, so a swapped near-tie is reported once
            // (as a byte mismatch) rather than also as two logit mismatches.
            row(ref.position, "top" + std::to_string(j + 1) + " logit",
                ref.top_logits[static_cast<std::size_t>(j)],
                logits[ref.top_bytes[static_cast<std::size_t>(j)]], logit_tolerance);
        }
    }
    const double diff = std::fabs(r.bits_per_byte - reference_bits_per_byte);
    const bool bpb_ok = diff <= bpb_tolerance;
    failures += bpb_ok ? 0 : 1;
    std::printf("%-4s %-14s %12.4f %12.4f %10.2e  %s\n", "all", "bits/byte", reference_bits_per_byte,
                r.bits_per_byte, diff, bpb_ok ? "PASS" : "FAIL");
    std::printf("reference check: %s (%d failure%s; tolerances: logits %.0e, bits/byte %.0e)\n",
                failures ? "FAIL" : "PASS", failures, failures == 1 ? "" : "s", logit_tolerance,
                bpb_tolerance);
    return failures ? 1 : 0;
}

// ---- command line --------------------------------------------------------------------------

void usage(const char* argv0) {
    std::fprintf(stderr,
                 "usage: %s MODEL_DIR [TEXT_FILE] [--check-reference] [--max-tokens N] [options]\n"
                 "  TEXT_FILE          bytes to score: prints bits per byte and decode tokens/s\n"
                 "  --check-reference  compare logits with the model README's table (exit 1 on mismatch)\n"
                 "  --max-tokens N     score only the first N bytes of TEXT_FILE (default: up to ctx)\n"
                 "attention:\n"
                 "  --attention A      dense (the example's fp32 Eigen attention, default),\n"
                 "                     sparq-dense (sparq::dense_step over a sparq::kv_cache),\n"
                 "                     sparq (sparq::step: SparQ attention)\n"
                 "  --kv-dtype T       f32 (default), f16 or bf16: sparq KV cache storage\n"
                 "  --rank R           SparQ r, query components for approximate scores (default 16)\n"
                 "  --top-k K          SparQ k, positions gathered (default 128)\n"
                 "  --top-k-frac F     k = clamp(round(F*S), --top-k-min, S) at each step (S grows)\n"
                 "  --top-k-min M      lower bound for k with --top-k-frac (default 1)\n"
                 "  --local L          SparQ l, most recent positions always gathered (clamped to k)\n"
                 "  --local-frac F     l = floor(F*k) at each step (default 0.25, the paper's k/4)\n"
                 "  --no-reallocate    turn off SparQ's mean-value reallocation\n"
                 "  --page-size P      sparq backends: paged KV cache, P tokens per page (a power of\n"
                 "                     two), pages scattered through the pool (default: contiguous)\n"
                 "  --dense-below N    run sparq::dense_step while S < N (default 0)\n"
                 "  --compare-dense T  also score TEXT_FILE with the dense backend; exit 1 if the\n"
                 "                     bits per byte differ by more than T\n",
                 argv0);
}

std::vector<std::uint8_t> read_bytes(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error(path + ": cannot open file");
    return std::vector<std::uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

}  // namespace

int main(int argc, char** argv) {
    std::string model_dir, text_file;
    bool check = false;
    long max_tokens = -1;
    std::string attention = "dense";
    std::string dtype_arg = "f32";
    tiny_lm::sparq_settings settings;
    double compare_tol = -1.0;
    // Option values: each returns false (after printing why) on a bad or missing value.
    auto value = [&](int& i, const std::string& name) -> const char* {
        if (i + 1 >= argc) {
            std::fprintf(stderr, "%s needs a value\n", name.c_str());
            return nullptr;
        }
        return argv[++i];
    };
    auto parse_size = [&](int& i, const std::string& name, std::size_t min, std::size_t& out) {
        const char* v = value(i, name);
        if (!v) return false;
        char* end = nullptr;
        const long long x = std::strtoll(v, &end, 10);
        if (*end != '\0' || end == v || x < static_cast<long long>(min)) {
            std::fprintf(stderr, "%s needs an integer >= %zu, got '%s'\n", name.c_str(), min, v);
            return false;
        }
        out = static_cast<std::size_t>(x);
        return true;
    };
    auto parse_frac = [&](int& i, const std::string& name, double lo, bool lo_open, double& out) {
        const char* v = value(i, name);
        if (!v) return false;
        char* end = nullptr;
        const double x = std::strtod(v, &end);
        if (*end != '\0' || end == v || !(x <= 1.0) || x < lo || (lo_open && x == lo)) {
            std::fprintf(stderr, "%s needs a number in %s%g, 1], got '%s'\n", name.c_str(),
                         lo_open ? "(" : "[", lo, v);
            return false;
        }
        out = x;
        return true;
    };
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        bool ok = true;
        if (a == "--check-reference") {
            check = true;
        } else if (a == "--attention") {
            const char* v = value(i, a);
            ok = v != nullptr;
            if (ok) attention = v;
        } else if (a == "--kv-dtype") {
            const char* v = value(i, a);
            ok = v != nullptr;
            if (ok) dtype_arg = v;
        } else if (a == "--rank") {
            ok = parse_size(i, a, 1, settings.policy.rank);
        } else if (a == "--top-k") {
            ok = parse_size(i, a, 1, settings.policy.top_k);
            settings.policy.top_k_fraction = 0.0;
        } else if (a == "--top-k-frac") {
            ok = parse_frac(i, a, 0.0, true, settings.policy.top_k_fraction);
        } else if (a == "--top-k-min") {
            ok = parse_size(i, a, 1, settings.policy.top_k_min);
        } else if (a == "--local") {
            std::size_t l = 0;
            ok = parse_size(i, a, 0, l);
            settings.local = static_cast<long>(l);
        } else if (a == "--local-frac") {
            ok = parse_frac(i, a, 0.0, false, settings.policy.local_fraction);
            settings.local = -1;
        } else if (a == "--page-size") {
            ok = parse_size(i, a, 1, settings.page_size);
        } else if (a == "--no-reallocate") {
            settings.policy.reallocate = false;
        } else if (a == "--dense-below") {
            ok = parse_size(i, a, 0, settings.policy.dense_below);
        } else if (a == "--compare-dense") {
            const char* v = value(i, a);
            ok = v != nullptr;
            if (ok) {
                char* end = nullptr;
                compare_tol = std::strtod(v, &end);
                if (*end != '\0' || end == v || !(compare_tol >= 0.0)) {
                    std::fprintf(stderr, "--compare-dense needs a tolerance >= 0, got '%s'\n", v);
                    ok = false;
                }
            }
        } else if (a == "--max-tokens") {
            if (i + 1 >= argc) {
                usage(argv[0]);
                return 2;
            }
            char* end = nullptr;
            max_tokens = std::strtol(argv[++i], &end, 10);
            if (*end != '\0' || max_tokens <= 0) {
                std::fprintf(stderr, "--max-tokens needs a positive integer, got '%s'\n", argv[i]);
                return 2;
            }
        } else if (a == "-h" || a == "--help") {
            usage(argv[0]);
            return 0;
        } else if (!a.empty() && a[0] == '-') {
            std::fprintf(stderr, "unknown option '%s'\n", a.c_str());
            usage(argv[0]);
            return 2;
        } else if (model_dir.empty()) {
            model_dir = a;
        } else if (text_file.empty()) {
            text_file = a;
        } else {
            usage(argv[0]);
            return 2;
        }
        if (!ok) return 2;
    }
    if (model_dir.empty() || (!check && text_file.empty())) {
        usage(argv[0]);
        return 2;
    }
    if (attention != "dense" && attention != "sparq-dense" && attention != "sparq") {
        std::fprintf(stderr, "--attention must be dense, sparq-dense or sparq, got '%s'\n", attention.c_str());
        return 2;
    }
    tiny_lm::kv_dtype dtype = tiny_lm::kv_dtype::f32;
    if (dtype_arg == "f16") {
        dtype = tiny_lm::kv_dtype::f16;
    } else if (dtype_arg == "bf16") {
        dtype = tiny_lm::kv_dtype::bf16;
    } else if (dtype_arg != "f32") {
        std::fprintf(stderr, "--kv-dtype must be f32, f16 or bf16, got '%s'\n", dtype_arg.c_str());
        return 2;
    }
    if (attention == "dense" && settings.page_size > 0) {
        std::fprintf(stderr, "--page-size applies to the sparq backends (sparq-dense, sparq), not dense\n");
        return 2;
    }
    if (attention == "dense" && dtype != tiny_lm::kv_dtype::f32) {
        std::fprintf(stderr, "--attention dense stores its cache in f32; use sparq-dense for --kv-dtype %s\n",
                     dtype_arg.c_str());
        return 2;
    }
    if (compare_tol >= 0.0 && text_file.empty()) {
        std::fprintf(stderr, "--compare-dense needs a TEXT_FILE\n");
        return 2;
    }

    try {
        const auto t0 = std::chrono::steady_clock::now();
        model m = model::load(model_dir);
        const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        const int ctx = m.config().ctx;
        std::printf("loaded %s in %.2f s (%d layers, d_model %d, %d/%d heads, ctx %d)\n",
                    model_dir.c_str(), load_s, m.config().n_layers, m.config().d_model,
                    m.config().n_heads, m.config().n_kv_heads, ctx);
        const tiny_lm::attention_shape shape = m.attention_shape_for(ctx);
        tiny_lm::dense_attention dense(shape);
        std::unique_ptr<attention_backend> chosen;
        std::string name = "dense (example, fp32)";
        if (attention != "dense") {
            chosen = tiny_lm::make_sparq_backend(attention, dtype, shape, settings);
            name = attention + " kv " + dtype_arg;
            if (attention == "sparq") {
                char buf[256];
                const sparq::decode_policy& p = settings.policy;
                const std::string k = p.top_k_fraction > 0
                                          ? "k=clamp(" + std::to_string(p.top_k_fraction).substr(0, 8) +
                                                "*S, " + std::to_string(p.top_k_min) + ", S)"
                                          : "k=" + std::to_string(std::max(p.top_k, p.top_k_min));
                // A fixed --local is clamped to k (sparq_settings::resolve): with a fixed k that
                // is the l every step uses (resolve(1): k does not depend on S then); with k
                // from --top-k-frac, min(L, k) at each step.
                const std::string l =
                    settings.local < 0 ? "l=" + std::to_string(p.local_fraction).substr(0, 6) + "*k"
                    : p.top_k_fraction > 0 ? "l=min(" + std::to_string(settings.local) + ", k)"
                                           : "l=" + std::to_string(settings.resolve(1).local);
                std::snprintf(buf, sizeof buf, " r=%zu %s %s reallocate=%s", p.rank, k.c_str(),
                              l.c_str(), p.reallocate ? "on" : "off");
                name += buf;
                if (p.dense_below > 0) name += " dense below S=" + std::to_string(p.dense_below);
            }
            if (settings.page_size > 0) name += " paged P=" + std::to_string(settings.page_size);
        }
        attention_backend& attn = chosen ? *chosen : static_cast<attention_backend&>(dense);

        int status = 0;
        if (check) status = check_reference(m, attn, name);
        if (!text_file.empty()) {
            std::vector<std::uint8_t> bytes = read_bytes(text_file);
            const std::size_t given = bytes.size();
            std::size_t limit = static_cast<std::size_t>(ctx);
            if (max_tokens > 0) limit = std::min(limit, static_cast<std::size_t>(max_tokens));
            if (bytes.size() > limit) bytes.resize(limit);
            if (given > static_cast<std::size_t>(ctx) && (max_tokens < 0 || max_tokens > ctx))
                std::fprintf(stderr, "note: %s has %zu bytes; scoring the first %d (the model's ctx)\n",
                             text_file.c_str(), given, ctx);
            if (bytes.size() < 2) throw std::runtime_error(text_file + ": need at least 2 bytes");
            timed_attention timed(attn);
            const run_result r = run_sequence(m, timed, bytes);
            std::printf("%s: %d bytes, bits per byte %.4f, %.2f s, %.1f tokens/s, "
                        "%.1f tokens/s of thread CPU time (%s)\n",
                        text_file.c_str(), r.tokens, r.bits_per_byte, r.seconds, r.tokens / r.seconds,
                        r.tokens / r.cpu_seconds, name.c_str());
            std::printf("attention CPU time: attend %.1f us/token, append %.1f us/token (all layers)\n",
                        1e6 * timed.attend_seconds / r.tokens, 1e6 * timed.append_seconds / r.tokens);
            if (const tiny_lm::transfer_tally* t = tiny_lm::transfers_of(attn))
                std::printf("attention transfers: %.4f of dense (1/%.2f), elements per KV head summed over the run\n",
                            t->ratio(), 1.0 / t->ratio());
            if (compare_tol >= 0.0) {
                const run_result d = run_sequence(m, dense, bytes);
                const double diff = std::fabs(d.bits_per_byte - r.bits_per_byte);
                const bool same = diff <= compare_tol;  // NaN fails
                std::printf("compare with dense: dense %.6f, %s %.6f, |diff| %.2e, tolerance %.1e: %s\n",
                            d.bits_per_byte, attention.c_str(), r.bits_per_byte, diff, compare_tol,
                            same ? "PASS" : "FAIL");
                if (!same) status = 1;
            }
        }
        return status;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "tiny_lm: error: %s\n", e.what());
        return 1;
    }
}
