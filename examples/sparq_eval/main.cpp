// sparq-eval: accuracy and traffic of SparQ attention on recorded attention traces.
//
// Reads a trace directory (manifest.json + q/K/V/o .npy files, format in docs/accuracy.md),
// runs sparq::checked_step for every setting of a sweep and sparq::dense_step as the baseline,
// and reports per trace and setting: relative L2 error and cosine similarity of the output
// against the trace's exact float64 dense output o.npy, the fetched approximate mass alpha,
// the recall of the true attention mass on the chosen positions, and the bytes read by a
// SparQ step and by a dense step (sparq::traffic_counter) with their ratio.
//
// Exit status: 0 when at least one trace was evaluated (bad traces are reported on stderr and
// skipped); 1 when no trace could be evaluated (manifest unreadable, every trace bad) or an
// output file could not be written; 2 for a bad command line.
#include "evaluate.hpp"
#include "svg_plot.hpp"

#include <sparq/io/npy.hpp>
#include <sparq/io/trace.hpp>
#include <sparq/sparq.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

namespace {

const char* const usage_text =
    "usage: sparq-eval TRACE_DIR [options]\n"
    "\n"
    "Runs SparQ and dense decode attention on the traces of TRACE_DIR/manifest.json and\n"
    "reports output error vs the exact dense output (o.npy), recall, alpha and bytes read.\n"
    "Comma-separated lists sweep every combination.\n"
    "\n"
    "  --rank LIST         r, query components used for approximate scores (default 8,16,32)\n"
    "  --top-k LIST        k, positions gathered (default 32,64,128)\n"
    "  --local LIST        l, local window, a number or k/N (e.g. k/4) (default 16)\n"
    "  --no-reallocate     turn mean-value reallocation off\n"
    "  --reallocate WHICH  on (default), off, or both\n"
    "  --kv-dtype LIST     KV storage type: f32 (default), f16, bf16\n"
    "  --trace ID          evaluate only this trace id (repeatable)\n"
    "  --json FILE         write one JSON record per trace x setting\n"
    "  --csv FILE          the same records as CSV\n"
    "  --out-dir DIR       write DIR/<trace id>.npy, the SparQ output float32\n"
    "                      [n_q_heads, head_dim] (exactly one setting only)\n"
    "  --svg FILE          plot of mean error vs mean compression, one line per rank\n"
    "  --detail            also put per-head recall and the selections i1/i2 in the JSON\n"
    "  --quiet             print only the dense sanity lines and the summary table\n"
    "  -h, --help          this text\n"
    "\n"
    "Exit status: 0 if at least one trace was evaluated (bad traces are reported and\n"
    "skipped), 1 if none could be or an output could not be written, 2 on a bad command line.\n";

[[noreturn]] void usage_error(const std::string& msg) {
  std::fprintf(stderr, "sparq-eval: error: %s\n(run sparq-eval --help for the options)\n",
               msg.c_str());
  std::exit(2);
}

struct local_spec {
  bool ratio = false;  // l = k / n
  std::size_t n = 0;   // the value, or the divisor
  std::string text;
  std::size_t for_k(std::size_t k) const { return ratio ? k / n : n; }
};

struct options {
  std::string trace_dir;
  std::vector<std::size_t> ranks{8, 16, 32}, top_ks{32, 64, 128};
  std::vector<local_spec> locals{{false, 16, "16"}};
  std::vector<bool> reallocate{true};
  std::vector<sparq::dtype> dtypes{sparq::dtype::f32};
  std::vector<std::string> only;
  std::string json, csv, out_dir, svg;
  bool detail = false, quiet = false;
};

std::vector<std::string> split_list(const std::string& opt, const std::string& v) {
  std::vector<std::string> out;
  std::string cur;
  std::stringstream ss(v);
  while (std::getline(ss, cur, ',')) {
    if (cur.empty()) usage_error(opt + " '" + v + "': empty element in the list");
    out.push_back(cur);
  }
  if (v.empty() || v.back() == ',') usage_error(opt + " '" + v + "': empty element in the list");
  return out;
}

std::size_t parse_count(const std::string& opt, const std::string& s) {
  if (s.empty() || s.find_first_not_of("0123456789") != std::string::npos)
    usage_error(opt + " '" + s + "': not a non-negative integer");
  if (s.size() > 9) usage_error(opt + " '" + s + "': too large");
  return static_cast<std::size_t>(std::stoul(s));
}

template <class T>
void dedupe(std::vector<T>& v) {
  std::vector<T> out;
  for (const auto& x : v)
    if (std::find(out.begin(), out.end(), x) == out.end()) out.push_back(x);
  v = out;
}

options parse(int argc, char** argv) {
  options o;
  bool no_realloc_flag = false, realloc_opt = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i], val;
    bool has_inline = false;
    if (a.rfind("--", 0) == 0 && a.find('=') != std::string::npos) {
      val = a.substr(a.find('=') + 1);
      a = a.substr(0, a.find('='));
      has_inline = true;
    }
    auto value = [&]() -> std::string {
      if (has_inline) return val;
      if (i + 1 >= argc) usage_error("missing value after " + a);
      return argv[++i];
    };
    auto flag = [&]() {
      if (has_inline) usage_error(a + " takes no value");
    };
    if (a == "-h" || a == "--help") {
      std::fputs(usage_text, stdout);
      std::exit(0);
    } else if (a == "--rank") {
      o.ranks.clear();
      for (const auto& s : split_list(a, value())) {
        const std::size_t r = parse_count(a, s);
        if (r < 1) usage_error("--rank " + s + ": allowed 1 <= rank <= head_dim");
        o.ranks.push_back(r);
      }
    } else if (a == "--top-k") {
      o.top_ks.clear();
      for (const auto& s : split_list(a, value())) {
        const std::size_t k = parse_count(a, s);
        if (k < 1) usage_error("--top-k " + s + ": allowed top_k >= 1");
        o.top_ks.push_back(k);
      }
    } else if (a == "--local") {
      o.locals.clear();
      for (const auto& s : split_list(a, value())) {
        local_spec l;
        l.text = s;
        if (s.rfind("k/", 0) == 0) {
          l.ratio = true;
          l.n = parse_count(a, s.substr(2));
          if (l.n == 0) usage_error("--local " + s + ": division by zero");
        } else {
          l.n = parse_count(a, s);
        }
        o.locals.push_back(l);
      }
    } else if (a == "--no-reallocate") {
      flag();
      no_realloc_flag = true;
      o.reallocate = {false};
    } else if (a == "--reallocate") {
      const std::string v = value();
      realloc_opt = true;
      if (v == "on") o.reallocate = {true};
      else if (v == "off") o.reallocate = {false};
      else if (v == "both") o.reallocate = {true, false};
      else usage_error("--reallocate '" + v + "': allowed on, off, both");
    } else if (a == "--kv-dtype") {
      o.dtypes.clear();
      for (const auto& s : split_list(a, value())) {
        if (s == "f32") o.dtypes.push_back(sparq::dtype::f32);
        else if (s == "f16") o.dtypes.push_back(sparq::dtype::f16);
        else if (s == "bf16") o.dtypes.push_back(sparq::dtype::bf16);
        else usage_error("--kv-dtype '" + s + "': allowed f32, f16, bf16");
      }
    } else if (a == "--trace") {
      o.only.push_back(value());
    } else if (a == "--json") {
      o.json = value();
    } else if (a == "--csv") {
      o.csv = value();
    } else if (a == "--out-dir") {
      o.out_dir = value();
    } else if (a == "--svg") {
      o.svg = value();
    } else if (a == "--detail") {
      flag();
      o.detail = true;
    } else if (a == "--quiet") {
      flag();
      o.quiet = true;
    } else if (!a.empty() && a[0] == '-') {
      usage_error("unknown option '" + a + "'");
    } else {
      if (!o.trace_dir.empty()) usage_error("more than one trace directory ('" + o.trace_dir +
                                            "' and '" + a + "')");
      o.trace_dir = a;
    }
  }
  if (no_realloc_flag && realloc_opt) usage_error("give either --no-reallocate or --reallocate");
  if (o.trace_dir.empty()) usage_error("no trace directory given");
  dedupe(o.ranks);
  dedupe(o.top_ks);
  dedupe(o.dtypes);
  for (std::size_t k : o.top_ks)
    for (const auto& l : o.locals)
      if (l.for_k(k) > k)
        usage_error("--local " + l.text + (l.ratio ? " = " + std::to_string(l.for_k(k)) : "") +
                    " > --top-k " + std::to_string(k) + "; allowed: 0 <= local <= top_k");
  return o;
}

std::vector<sparq_eval::setting> settings_of(const options& o) {
  std::vector<sparq_eval::setting> out;
  for (auto dt : o.dtypes)
    for (bool re : o.reallocate)
      for (std::size_t r : o.ranks)
        for (std::size_t k : o.top_ks)
          for (const auto& l : o.locals) {
            sparq_eval::setting s{r, k, l.for_k(k), re, dt};
            bool dup = false;
            for (const auto& x : out)
              dup |= x.rank == s.rank && x.top_k == s.top_k && x.local == s.local &&
                     x.reallocate == s.reallocate && x.kv_dtype == s.kv_dtype;
            if (!dup) out.push_back(s);
          }
  return out;
}

std::string jnum(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

std::string jstr(const std::string& s) {
  std::string o = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\', o += c;
    else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      o += buf;
    } else o += c;
  }
  return o + "\"";
}

template <class V>
std::string jarr(const V& v) {
  std::string o = "[";
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (i) o += ", ";
    if constexpr (std::is_floating_point_v<typename V::value_type>) o += jnum(v[i]);
    else o += std::to_string(v[i]);
  }
  return o + "]";
}

struct result {
  sparq_eval::record rec;
  double dense_rel_err = 0;  // sparq dense_step vs o at the same KV dtype
};

bool write_json(const std::string& path, const std::vector<result>& rs, bool detail) {
  std::ofstream f(path);
  if (!f) return false;
  f << "[\n";
  for (std::size_t n = 0; n < rs.size(); ++n) {
    const auto& r = rs[n].rec;
    f << "  {\"trace\": " << jstr(r.trace) << ", \"rank\": " << r.cfg.rank
      << ", \"top_k\": " << r.cfg.top_k << ", \"local\": " << r.cfg.local
      << ", \"reallocate\": " << (r.cfg.reallocate ? "true" : "false")
      << ", \"kv_dtype\": " << jstr(sparq::dtype_name(r.cfg.kv_dtype))
      << ", \"rel_err\": " << jnum(r.rel_err) << ", \"cosine\": " << jnum(r.cosine)
      << ", \"alpha_mean\": " << jnum(r.alpha_mean) << ", \"recall\": " << jnum(r.recall)
      << ", \"sparq_bytes\": " << r.sparq_bytes << ", \"dense_bytes\": " << r.dense_bytes
      << ", \"compression\": " << jnum(r.compression) << ", \"layer\": " << r.layer
      << ", \"S\": " << r.S << ", \"dense_rel_err\": " << jnum(rs[n].dense_rel_err)
      << ", \"alpha\": " << jarr(r.alpha);
    if (detail) {
      f << ", \"recall_per_head\": " << jarr(r.recall_per_head) << ", \"i1\": [";
      for (std::size_t j = 0; j < r.i1.size(); ++j) f << (j ? ", " : "") << jarr(r.i1[j]);
      f << "], \"i2\": [";
      for (std::size_t j = 0; j < r.i2.size(); ++j) f << (j ? ", " : "") << jarr(r.i2[j]);
      f << "]";
    }
    f << "}" << (n + 1 < rs.size() ? "," : "") << "\n";
  }
  f << "]\n";
  return static_cast<bool>(f);
}

bool write_csv(const std::string& path, const std::vector<result>& rs) {
  std::ofstream f(path);
  if (!f) return false;
  f << "trace,rank,top_k,local,reallocate,kv_dtype,rel_err,cosine,alpha_mean,recall,"
       "sparq_bytes,dense_bytes,compression,layer,S,dense_rel_err\n";
  for (const auto& x : rs) {
    const auto& r = x.rec;
    std::string id = r.trace;
    if (id.find_first_of(",\"\n") != std::string::npos) {
      std::string q = "\"";
      for (char c : id) q += c == '"' ? std::string("\"\"") : std::string(1, c);
      id = q + "\"";
    }
    f << id << "," << r.cfg.rank << "," << r.cfg.top_k << "," << r.cfg.local << ","
      << (r.cfg.reallocate ? "true" : "false") << "," << sparq::dtype_name(r.cfg.kv_dtype) << ","
      << jnum(r.rel_err) << "," << jnum(r.cosine) << "," << jnum(r.alpha_mean) << ","
      << jnum(r.recall) << "," << r.sparq_bytes << "," << r.dense_bytes << ","
      << jnum(r.compression) << "," << r.layer << "," << r.S << "," << jnum(x.dense_rel_err)
      << "\n";
  }
  return static_cast<bool>(f);
}

using setting_key = std::tuple<int, bool, std::size_t, std::size_t, std::size_t>;
setting_key key_of(const sparq_eval::setting& s) {
  return {static_cast<int>(s.kv_dtype), !s.reallocate, s.rank, s.top_k, s.local};
}

struct summary {
  sparq_eval::setting cfg;
  std::size_t n = 0;
  double rel_err = 0, cosine = 0, alpha_mean = 0, recall = 0, compression = 0;
  double worst_rel_err = 0, worst_recall = 1;
};

std::vector<summary> summarize(const std::vector<sparq_eval::setting>& settings,
                               const std::vector<result>& rs) {
  std::vector<summary> out;
  for (const auto& s : settings) {
    summary m;
    m.cfg = s;
    for (const auto& x : rs) {
      if (key_of(x.rec.cfg) != key_of(s)) continue;
      ++m.n;
      m.rel_err += x.rec.rel_err;
      m.cosine += x.rec.cosine;
      m.alpha_mean += x.rec.alpha_mean;
      m.recall += x.rec.recall;
      m.compression += x.rec.compression;
      m.worst_rel_err = std::max(m.worst_rel_err, x.rec.rel_err);
      m.worst_recall = std::min(m.worst_recall, x.rec.recall);
    }
    if (m.n == 0) continue;
    const double n = double(m.n);
    m.rel_err /= n, m.cosine /= n, m.alpha_mean /= n, m.recall /= n, m.compression /= n;
    out.push_back(m);
  }
  return out;
}

std::string plot_svg(const std::vector<summary>& sm, const options& o, std::size_t n_traces) {
  sparq_eval::plot_spec p;
  p.title = "SparQ output error vs transfer ratio";
  std::ostringstream sub;
  sub << "mean over " << n_traces << " trace" << (n_traces == 1 ? "" : "s") << " of "
      << std::filesystem::path(o.trace_dir).lexically_normal().filename().string()
      << "; points labelled by k";
  p.subtitle = sub.str();
  p.x_title = "compression ratio = bytes read by SparQ / by dense (mean over traces)";
  p.y_title = "relative L2 error vs exact dense (mean)";
  p.legend_title = "series";
  const bool many_dt = o.dtypes.size() > 1, many_re = o.reallocate.size() > 1;
  const bool label_l = o.locals.size() == 1 && o.locals[0].ratio;
  std::map<std::tuple<int, bool, std::size_t, std::size_t>, std::size_t> idx;
  std::vector<std::size_t> rank_order(o.ranks.begin(), o.ranks.end());
  for (const auto& m : sm) {
    // One line per rank (and per dtype / reallocation / local spec when those vary).
    std::size_t lkey = 0;
    while (lkey + 1 < o.locals.size() && o.locals[lkey].for_k(m.cfg.top_k) != m.cfg.local) ++lkey;
    const auto key = std::make_tuple(static_cast<int>(m.cfg.kv_dtype), !m.cfg.reallocate,
                                     m.cfg.rank, lkey);
    auto it = idx.find(key);
    if (it == idx.end()) {
      sparq_eval::plot_series s;
      std::ostringstream name;
      name << "r = " << m.cfg.rank;
      if (o.locals.size() > 1) name << ", l = " << o.locals[lkey].text;
      if (many_re) name << (m.cfg.reallocate ? ", realloc" : ", no realloc");
      if (many_dt) name << ", " << sparq::dtype_name(m.cfg.kv_dtype);
      s.name = name.str();
      s.color = static_cast<std::size_t>(
          std::find(rank_order.begin(), rank_order.end(), m.cfg.rank) - rank_order.begin());
      s.dashed = !m.cfg.reallocate && many_re;
      if (many_dt && m.cfg.kv_dtype != o.dtypes[0])
        s.dash = m.cfg.kv_dtype == sparq::dtype::bf16 ? "2,3" : "10,3,2,3";
      s.marker = many_dt ? static_cast<int>(m.cfg.kv_dtype) : (s.dashed ? 1 : 0);
      if (o.locals.size() > 1) s.marker = static_cast<int>(lkey % 4);
      it = idx.emplace(key, p.series.size()).first;
      p.series.push_back(s);
    }
    std::string lab = "k=" + std::to_string(m.cfg.top_k);
    if (label_l) lab += ",l=" + std::to_string(m.cfg.local);
    // Label each k once per rank only on the first drawn series of that rank, to keep it legible.
    bool first_of_rank = true;
    for (std::size_t s = 0; s < it->second; ++s)
      if (p.series[s].color == p.series[it->second].color) first_of_rank = false;
    p.series[it->second].points.push_back({m.compression, m.rel_err, first_of_rank ? lab : ""});
  }
  std::string settings;
  if (o.locals.size() == 1) settings += "l = " + o.locals[0].text;
  if (!many_re) settings += std::string(settings.empty() ? "" : ", ") +
                            (o.reallocate[0] ? "reallocation on" : "reallocation off");
  if (!many_dt) settings += std::string(settings.empty() ? "" : ", ") + "KV " +
                            sparq::dtype_name(o.dtypes[0]);
  if (!settings.empty()) p.subtitle += "; " + settings;
  return sparq_eval::render_svg(p);
}

}  // namespace

int main(int argc, char** argv) {
  const options o = parse(argc, argv);
  const auto settings = settings_of(o);
  if (!o.out_dir.empty() && settings.size() != 1)
    usage_error("--out-dir needs exactly one setting; this sweep has " +
                std::to_string(settings.size()) +
                " (give single values to --rank, --top-k, --local, --kv-dtype, --reallocate)");

  const auto t_start = std::chrono::steady_clock::now();
  std::vector<sparq::io::trace_info> infos;
  try {
    infos = sparq::io::read_manifest(o.trace_dir);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sparq-eval: error: %s\n", e.what());
    return 1;
  }
  if (!o.only.empty()) {
    std::vector<sparq::io::trace_info> keep;
    for (const auto& id : o.only) {
      auto it = std::find_if(infos.begin(), infos.end(), [&](const auto& t) { return t.id == id; });
      if (it == infos.end()) usage_error("--trace '" + id + "': no such trace in the manifest");
      keep.push_back(*it);
    }
    infos = keep;
  }
  // rank > head_dim is a command-line error (the manifest's head_dim is known up front).
  for (const auto& t : infos)
    for (std::size_t r : o.ranks)
      if (t.head_dim > 0 && r > t.head_dim)
        usage_error("--rank " + std::to_string(r) + " > head_dim " + std::to_string(t.head_dim) +
                    " of trace '" + t.id + "'; allowed: 1 <= rank <= head_dim");
  if (!o.out_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(o.out_dir, ec);
    if (ec) {
      std::fprintf(stderr, "sparq-eval: error: cannot create --out-dir '%s': %s\n",
                   o.out_dir.c_str(), ec.message().c_str());
      return 1;
    }
  }

  std::printf("sparq-eval: %zu trace(s) in %s, %zu setting(s)\n", infos.size(),
              o.trace_dir.c_str(), settings.size());
  std::vector<result> results;
  std::size_t evaluated = 0, skipped = 0;
  bool io_failed = false;
  const bool per_trace = !o.quiet;
  if (per_trace)
    std::printf("\n%-14s %5s %4s %4s %4s %3s %-4s  %10s %10s %8s %8s %10s %10s %7s\n", "trace", "S",
                "r", "k", "l", "re", "kv", "rel_err", "cosine", "alpha", "recall", "sparq_B",
                "dense_B", "ratio");
  for (const auto& info : infos) {
    sparq::io::trace tr;
    try {
      tr = sparq::io::load_trace(o.trace_dir, info);
    } catch (const sparq::io::format_error& e) {
      std::fprintf(stderr, "sparq-eval: skipping trace '%s': %s\n", info.id.c_str(), e.what());
      ++skipped;
      continue;
    }
    try {
      sparq_eval::trace_evaluator ev(tr);
      std::map<int, sparq_eval::dense_record> dense;
      for (auto dt : o.dtypes) {
        auto d = ev.dense(dt);
        std::printf("dense  %-14s kv %-4s sparq::dense_step vs o.npy: rel_err %.3e (max head "
                    "%.3e), %zu bytes read\n",
                    tr.info.id.c_str(), sparq::dtype_name(dt), d.rel_err, d.max_head_err, d.bytes);
        dense.emplace(static_cast<int>(dt), std::move(d));
      }
      for (const auto& s : settings) {
        result r{ev.run(s), dense.at(static_cast<int>(s.kv_dtype)).rel_err};
        const auto& x = r.rec;
        if (per_trace)
          std::printf("%-14s %5zu %4zu %4zu %4zu %3s %-4s  %10.4e %10.7f %8.5f %8.5f %10zu %10zu "
                      "%7.4f\n",
                      x.trace.c_str(), x.S, s.rank, s.top_k, s.local, s.reallocate ? "on" : "off",
                      sparq::dtype_name(s.kv_dtype), x.rel_err, x.cosine, x.alpha_mean, x.recall,
                      x.sparq_bytes, x.dense_bytes, x.compression);
        if (!o.out_dir.empty()) {
          const std::string path =
              (std::filesystem::path(o.out_dir) / (tr.info.id + ".npy")).string();
          try {
            sparq::io::write_npy_f32(path, {tr.info.n_q_heads, tr.info.head_dim}, x.y);
          } catch (const std::exception& e) {
            std::fprintf(stderr, "sparq-eval: error: writing %s: %s\n", path.c_str(), e.what());
            io_failed = true;
          }
        }
        results.push_back(std::move(r));
      }
      ++evaluated;
    } catch (const sparq::error& e) {
      // The manifest reader validated the shapes; a library rejection is still a bad trace.
      std::fprintf(stderr, "sparq-eval: skipping trace '%s': %s\n", info.id.c_str(), e.what());
      ++skipped;
    }
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();

  const auto sm = summarize(settings, results);
  if (!sm.empty()) {
    std::printf("\nmean over %zu trace(s)  (rel_err and recall: mean, worst)\n", evaluated);
    std::printf("%4s %4s %4s %3s %-4s  %10s %10s %10s %8s %8s %8s %7s\n", "r", "k", "l", "re", "kv",
                "rel_err", "worst", "cosine", "alpha", "recall", "worst", "ratio");
    for (const auto& m : sm)
      std::printf("%4zu %4zu %4zu %3s %-4s  %10.4e %10.4e %10.7f %8.5f %8.5f %8.5f %7.4f\n",
                  m.cfg.rank, m.cfg.top_k, m.cfg.local, m.cfg.reallocate ? "on" : "off",
                  sparq::dtype_name(m.cfg.kv_dtype), m.rel_err, m.worst_rel_err, m.cosine,
                  m.alpha_mean, m.recall, m.worst_recall, m.compression);
  }
  std::printf("\nevaluated %zu trace(s), skipped %zu, %zu setting(s), %.2f s\n", evaluated, skipped,
              settings.size(), seconds);

  auto wrote = [&](bool ok, const std::string& what, const std::string& path) {
    if (ok) {
      std::printf("wrote %s %s\n", what.c_str(), path.c_str());
    } else {
      std::fprintf(stderr, "sparq-eval: error: cannot write %s '%s'\n", what.c_str(), path.c_str());
      io_failed = true;
    }
  };
  if (!o.json.empty()) wrote(write_json(o.json, results, o.detail), "JSON", o.json);
  if (!o.csv.empty()) wrote(write_csv(o.csv, results), "CSV", o.csv);
  if (!o.svg.empty()) {
    std::ofstream f(o.svg);
    if (f) f << plot_svg(sm, o, evaluated);
    wrote(f && static_cast<bool>(f), "SVG", o.svg);
  }
  if (!o.out_dir.empty() && evaluated > 0)
    std::printf("wrote %zu output(s) to %s\n", evaluated, o.out_dir.c_str());

  if (evaluated == 0) {
    std::fprintf(stderr, "sparq-eval: error: no trace could be evaluated\n");
    return 1;
  }
  return io_failed ? 1 : 0;
}
