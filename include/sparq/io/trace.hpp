#pragma once
/// \file trace.hpp
/// Attention traces: a `manifest.json` plus, per trace, q/K/V/o `.npy` files.
///
/// Format (see traces/README.md): the manifest has global `n_q_heads`, `n_kv_heads`,
/// `head_dim`, `softmax_scale` and a `traces` list of records
///   {"id", "dir", "layer", "S", "n_q_heads", "n_kv_heads", "head_dim", "gqa_group",
///    "softmax_scale", "files": {"q", "K", "V", "o"}}
/// with file names relative to `<manifest_dir>/<dir>`. Each trace is one decode step: the
/// query at position S-1 attends keys/values 0..S-1.
///   q: [n_q_heads, head_dim]        K, V: [n_kv_heads, S, head_dim]
///   o: [n_q_heads, head_dim] dense softmax(softmax_scale * q K^T) V, float64
///   query head h uses KV head h / gqa_group.
///
/// Typical use (an evaluation tool that reports and skips bad traces):
/// \code
///   for (const sparq::io::trace_info& info : sparq::io::read_manifest(dir)) {
///     try {
///       const sparq::io::trace t = sparq::io::load_trace(dir, info);
///       ...  // t.q, t.K, t.V (float32), t.o (float64)
///     } catch (const sparq::io::format_error& e) {
///       std::cerr << "skipping: " << e.what() << '\n';
///     }
///   }
/// \endcode
///
/// Error policy: `read_manifest` throws `format_error` if the manifest as a whole cannot be
/// used (missing file, invalid JSON, no `traces` array, a field of the wrong type, a
/// required field missing, duplicate ids). Consistency of a record's numbers (S > 0,
/// head_dim > 0, n_q_heads a multiple of n_kv_heads, gqa_group = n_q_heads / n_kv_heads)
/// and everything about its files is checked by `load_trace`, so one bad trace can be
/// skipped while the rest are evaluated.

#include <cmath>
#include <cstddef>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "sparq/io/json.hpp"
#include "sparq/io/npy.hpp"

namespace sparq::io {

/// One manifest record, with global defaults already applied.
struct trace_info {
  std::string id;            ///< unique name, e.g. "t0_L2_S512"
  std::string dir;           ///< directory of the files, relative to the manifest directory
                             ///< (default: `id`)
  int layer = -1;            ///< model layer the trace was captured at (-1: not given)
  std::size_t S = 0;         ///< cached positions attended, the current token included
  std::size_t n_q_heads = 0;
  std::size_t n_kv_heads = 0;
  std::size_t head_dim = 0;  ///< d
  /// Query heads per KV head. When absent from the manifest it is n_q_heads / n_kv_heads
  /// (0 when that does not divide, which `load_trace` reports).
  std::size_t gqa_group = 0;
  /// Multiplier of q.k in the softmax. Default when absent: 1 / sqrt(head_dim).
  float softmax_scale = 0.0f;
  /// File names relative to `dir` (defaults: q.npy, K.npy, V.npy, o.npy).
  std::string q_file = "q.npy", k_file = "K.npy", v_file = "V.npy", o_file = "o.npy";
};

/// A loaded trace. All arrays are dense, C order.
struct trace {
  trace_info info;
  std::vector<float> q;   ///< [n_q_heads][head_dim], f32 (f16 files widened exactly)
  std::vector<float> K;   ///< [n_kv_heads][S][head_dim], f32
  std::vector<float> V;   ///< [n_kv_heads][S][head_dim], f32
  std::vector<double> o;  ///< [n_q_heads][head_dim], f64 dense-attention oracle

  /// Query head h: head_dim floats.
  const float* q_head(std::size_t h) const noexcept { return q.data() + h * info.head_dim; }
  /// Key row s of KV head j: head_dim floats. Row stride head_dim, head stride S * head_dim.
  const float* k_row(std::size_t j, std::size_t s) const noexcept {
    return K.data() + (j * info.S + s) * info.head_dim;
  }
  /// Value row s of KV head j: head_dim floats.
  const float* v_row(std::size_t j, std::size_t s) const noexcept {
    return V.data() + (j * info.S + s) * info.head_dim;
  }
  /// Oracle output of query head h: head_dim doubles.
  const double* o_head(std::size_t h) const noexcept { return o.data() + h * info.head_dim; }
  /// KV head used by query head h.
  std::size_t kv_head_of(std::size_t h) const noexcept { return h / info.gqa_group; }
};

/// Path of a trace's file: `<manifest_dir>/<info.dir>/<file>`.
inline std::string trace_file_path(const std::string& manifest_dir, const trace_info& info,
                                   const std::string& file) {
  return (std::filesystem::path(manifest_dir) / info.dir / file).string();
}

namespace detail {

/// Largest integer a double holds exactly; manifest integers must not exceed it.
inline constexpr double json_max_exact_integer = 9007199254740992.0;  // 2^53

class manifest_reader {
 public:
  explicit manifest_reader(std::string path) : path_(std::move(path)) {}

  std::vector<trace_info> read() {
    std::string text = read_text();
    const json_value root = parse_json(text, path_);
    if (!root.is_object())
      fail("the top level must be an object, found ", json_kind_name(root.type));
    const json_value* traces = root.find("traces");
    if (!traces) fail("no \"traces\" array");
    if (!traces->is_array())
      fail("\"traces\" must be an array, found ", json_kind_name(traces->type));

    std::vector<trace_info> out;
    std::set<std::string> ids;
    for (std::size_t i = 0; i < traces->items.size(); ++i) {
      trace_info t = read_record(root, traces->items[i], i);
      if (!ids.insert(t.id).second) fail("duplicate trace id '", t.id, "'");
      out.push_back(std::move(t));
    }
    return out;
  }

 private:
  template <class... Parts>
  [[noreturn]] void fail(Parts&&... parts) const {
    std::ostringstream os;
    os << "sparq::io: " << path_ << ": ";
    (os << ... << std::forward<Parts>(parts));
    throw format_error(os.str());
  }

  std::string read_text() const {
    namespace fs = std::filesystem;
    std::error_code ec;
    const fs::file_status st = fs::status(path_, ec);
    if (st.type() == fs::file_type::none) fail("cannot access manifest: ", ec.message());
    if (!fs::exists(st)) fail("manifest not found");
    if (fs::is_directory(st)) fail("is a directory, expected a manifest file");
    std::ifstream in(path_, std::ios::binary);
    if (!in) fail("cannot open manifest for reading");
    std::ostringstream ss;
    ss << in.rdbuf();
    if (in.bad()) fail("read error");
    return ss.str();
  }

  /// The value of `key` in the record, else in the manifest's globals, else nullptr.
  static const json_value* lookup(const json_value& root, const json_value& rec,
                                  const char* key) {
    if (const json_value* v = rec.find(key)) return v;
    return root.find(key);
  }

  std::size_t to_size(const json_value* v, const std::string& where, const char* key) const {
    if (!v->is_number() || !(v->number >= 0.0) || v->number != std::floor(v->number) ||
        v->number > json_max_exact_integer)
      fail(where, ": \"", key, "\" must be a non-negative integer, found ",
           v->is_number() ? std::to_string(v->number) : json_kind_name(v->type));
    return static_cast<std::size_t>(v->number);
  }

  std::size_t required_size(const json_value& root, const json_value& rec,
                            const std::string& where, const char* key) const {
    const json_value* v = lookup(root, rec, key);
    if (!v) fail(where, ": \"", key, "\" is missing (not in the record nor in the globals)");
    return to_size(v, where, key);
  }

  std::string string_field(const json_value& v, const std::string& where,
                           const std::string& key) const {
    if (!v.is_string())
      fail(where, ": \"", key, "\" must be a string, found ", json_kind_name(v.type));
    if (v.string.empty()) fail(where, ": \"", key, "\" must not be empty");
    return v.string;
  }

  trace_info read_record(const json_value& root, const json_value& rec, std::size_t index) {
    std::string where = "trace #" + std::to_string(index);
    if (!rec.is_object()) fail(where, ": must be an object, found ", json_kind_name(rec.type));
    trace_info t;
    const json_value* id = rec.find("id");
    if (!id) fail(where, ": \"id\" is missing");
    t.id = string_field(*id, where, "id");
    where += " ('" + t.id + "')";

    const json_value* dir = rec.find("dir");
    t.dir = dir ? string_field(*dir, where, "dir") : t.id;

    if (const json_value* layer = rec.find("layer")) {
      if (!layer->is_number() || layer->number != std::floor(layer->number) ||
          std::fabs(layer->number) > 1e9)
        fail(where, ": \"layer\" must be an integer, found ",
             layer->is_number() ? std::to_string(layer->number) : json_kind_name(layer->type));
      t.layer = static_cast<int>(layer->number);
    }

    t.S = required_size(root, rec, where, "S");
    t.n_q_heads = required_size(root, rec, where, "n_q_heads");
    t.n_kv_heads = required_size(root, rec, where, "n_kv_heads");
    t.head_dim = required_size(root, rec, where, "head_dim");
    if (const json_value* g = lookup(root, rec, "gqa_group"))
      t.gqa_group = to_size(g, where, "gqa_group");
    else if (t.n_kv_heads != 0 && t.n_q_heads % t.n_kv_heads == 0)
      t.gqa_group = t.n_q_heads / t.n_kv_heads;

    if (const json_value* sc = lookup(root, rec, "softmax_scale")) {
      if (!sc->is_number() || !std::isfinite(static_cast<float>(sc->number)) ||
          !(sc->number > 0.0))
        fail(where, ": \"softmax_scale\" must be a positive finite number, found ",
             sc->is_number() ? std::to_string(sc->number) : json_kind_name(sc->type));
      t.softmax_scale = static_cast<float>(sc->number);
    } else if (t.head_dim > 0) {
      t.softmax_scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(t.head_dim)));
    }

    if (const json_value* files = lookup(root, rec, "files")) {
      if (!files->is_object())
        fail(where, ": \"files\" must be an object, found ", json_kind_name(files->type));
      const std::pair<const char*, std::string*> names[] = {
          {"q", &t.q_file}, {"K", &t.k_file}, {"V", &t.v_file}, {"o", &t.o_file}};
      for (const auto& [key, dst] : names)
        if (const json_value* f = files->find(key))
          *dst = string_field(*f, where, std::string("files.") + key);
    }
    return t;
  }

  std::string path_;
};

template <class... Parts>
[[noreturn]] inline void trace_fail(const trace_info& info, Parts&&... parts) {
  std::ostringstream os;
  os << "sparq::io: trace '" << info.id << "': ";
  (os << ... << std::forward<Parts>(parts));
  throw format_error(os.str());
}

/// Reads one array of a trace, checking its shape; rethrows reader errors with the trace id.
template <class T>
std::vector<T> trace_read_array(const std::string& manifest_dir, const trace_info& info,
                                const std::string& file, const char* role,
                                const std::vector<std::size_t>& shape, const char* layout) {
  const std::string path = trace_file_path(manifest_dir, info, file);
  npy_array<T> a;
  try {
    if constexpr (std::is_same_v<T, float>)
      a = read_npy_f32(path, shape);
    else
      a = read_npy_f64(path, shape);
  } catch (const format_error& e) {
    std::string msg = e.what();
    const std::string prefix = "sparq::io: ";
    if (msg.compare(0, prefix.size(), prefix) == 0) msg.erase(0, prefix.size());
    trace_fail(info, msg, " (", role, " must be ", layout, " = ", npy_shape_string(shape), ")");
  }
  // Non-finite inputs would turn every downstream number into NaN without saying why.
  for (std::size_t i = 0; i < a.data.size(); ++i) {
    if (!std::isfinite(a.data[i])) {
      std::ostringstream idx;
      std::size_t rem = i;
      std::vector<std::size_t> at(shape.size());
      for (std::size_t k = shape.size(); k-- > 0;) {
        at[k] = rem % shape[k];
        rem /= shape[k];
      }
      for (std::size_t k = 0; k < at.size(); ++k) idx << (k ? ", " : "") << at[k];
      trace_fail(info, path, ": non-finite value (", a.data[i], ") in ", role, " at [",
                 idx.str(), "]");
    }
  }
  return std::move(a.data);
}

}  // namespace detail

/// Reads `<manifest_dir>/manifest.json` and returns its trace records in file order, with
/// per-trace fields falling back to the manifest's globals when absent (see `trace_info`
/// for the remaining defaults). Throws `format_error` naming the manifest (and the record
/// index and id) if the manifest cannot be used; see the error policy at the top.
inline std::vector<trace_info> read_manifest(const std::string& manifest_dir) {
  const std::string path = (std::filesystem::path(manifest_dir) / "manifest.json").string();
  return detail::manifest_reader(path).read();
}

/// Checks a record's numbers: S > 0, head_dim > 0, n_kv_heads > 0, n_q_heads a positive
/// multiple of n_kv_heads, gqa_group == n_q_heads / n_kv_heads, softmax_scale positive and
/// finite. Throws `format_error` naming the trace, the manifest and the mismatch.
inline void validate_trace_info(const std::string& manifest_dir, const trace_info& info) {
  const std::string m = (std::filesystem::path(manifest_dir) / "manifest.json").string();
  if (info.S == 0) detail::trace_fail(info, m, ": S must be > 0");
  if (info.head_dim == 0) detail::trace_fail(info, m, ": head_dim must be > 0");
  if (info.n_kv_heads == 0) detail::trace_fail(info, m, ": n_kv_heads must be > 0");
  if (info.n_q_heads == 0) detail::trace_fail(info, m, ": n_q_heads must be > 0");
  if (info.n_q_heads % info.n_kv_heads != 0)
    detail::trace_fail(info, m, ": n_q_heads (", info.n_q_heads,
                       ") is not a multiple of n_kv_heads (", info.n_kv_heads, ")");
  if (info.gqa_group != info.n_q_heads / info.n_kv_heads)
    detail::trace_fail(info, m, ": gqa_group (", info.gqa_group,
                       ") != n_q_heads / n_kv_heads (", info.n_q_heads, " / ", info.n_kv_heads,
                       " = ", info.n_q_heads / info.n_kv_heads, ")");
  if (!(info.softmax_scale > 0.0f) || !std::isfinite(info.softmax_scale))
    detail::trace_fail(info, m, ": softmax_scale (", info.softmax_scale,
                       ") must be positive and finite");
}

/// Loads one trace: validates `info` (`validate_trace_info`), then reads q, K, V as float32
/// and o as float64 (any of '<f2', '<f4', '<f8' on disk), checking shapes
///   q [n_q_heads, head_dim], K and V [n_kv_heads, S, head_dim], o [n_q_heads, head_dim]
/// and that every value is finite. Throws `format_error` naming the trace id, the file and
/// what is wrong; callers evaluating many traces catch it and skip the trace.
inline trace load_trace(const std::string& manifest_dir, const trace_info& info) {
  validate_trace_info(manifest_dir, info);
  trace t;
  t.info = info;
  const std::size_t nq = info.n_q_heads, nkv = info.n_kv_heads, d = info.head_dim, S = info.S;
  t.q = detail::trace_read_array<float>(manifest_dir, info, info.q_file, "q", {nq, d},
                                        "[n_q_heads, head_dim]");
  t.K = detail::trace_read_array<float>(manifest_dir, info, info.k_file, "K", {nkv, S, d},
                                        "[n_kv_heads, S, head_dim]");
  t.V = detail::trace_read_array<float>(manifest_dir, info, info.v_file, "V", {nkv, S, d},
                                        "[n_kv_heads, S, head_dim]");
  t.o = detail::trace_read_array<double>(manifest_dir, info, info.o_file, "o", {nq, d},
                                         "[n_q_heads, head_dim]");
  return t;
}

}  // namespace sparq::io
