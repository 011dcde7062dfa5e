#pragma once
/// \file npy.hpp
/// Reading and writing NumPy `.npy` files (the format of the attention traces).
///
/// Supported on read: format versions 1.0 and 2.0; `descr` '<f2' (float16), '<f4' (float32),
/// '<f8' (float64), little endian only; `fortran_order` False only; any rank, including 0
/// (a scalar) and zero-sized dimensions.
/// Version 3.0 (UTF-8 header) and every other dtype are rejected with a `format_error`.
///
/// Design: the file is read whole, then decoded byte by byte (no reinterpret_cast of file
/// bytes, so the reader is independent of host endianness and alignment). Every read is
/// bounded by the file size, so malformed input throws `format_error`, never crashes. The
/// caller picks the element type it wants to work in:
///   - `read_npy_f32(path)`: values as float32. f16 and f32 are exact; f64 is rounded to
///     nearest (values beyond the float range become ±inf). This is what kernels consume.
///   - `read_npy_f64(path)`: values as float64. Exact for all three dtypes; use it for the
///     dense oracle `o.npy` so its float64 precision is kept.
/// Both report the dtype the file stored (`npy_array::stored`), so a caller can tell whether
/// the values were narrowed. `read_npy_header(path)` reads only the header (shape, dtype).
///
/// Writing: `write_npy_f32` / `write_npy_f64` write format 1.0, C order, little endian, with the
/// header padded by spaces and terminated by '\n' so the data starts at a multiple of 64
/// bytes, exactly as `numpy.save` does.
///
/// Not a hot path: this is tooling for tests and the evaluation tool; it allocates freely.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "../dtype.hpp"

namespace sparq::io {

/// Thrown for any unreadable or malformed trace input (`.npy` file, manifest, trace that does
/// not match its manifest). The message always names the file (and, for traces, the trace id)
/// and what is wrong, e.g. `sparq::io: /x/K.npy: truncated data: expected 262144 bytes, found
/// 1000`.
class format_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Element type stored in a `.npy` file.
enum class npy_dtype { f16, f32, f64 };

/// NumPy spelling of a dtype ('<f2', '<f4', '<f8').
constexpr const char* npy_descr(npy_dtype t) noexcept {
  return t == npy_dtype::f16 ? "<f2" : t == npy_dtype::f32 ? "<f4" : "<f8";
}
/// Bytes per element of a dtype (2, 4, 8).
constexpr std::size_t npy_itemsize(npy_dtype t) noexcept {
  return t == npy_dtype::f16 ? 2 : t == npy_dtype::f32 ? 4 : 8;
}

/// Wildcard for one extent in an expected shape: `{npy_any, 64}` accepts any number of rows
/// of 64 columns. The rank is always checked.
inline constexpr std::size_t npy_any = static_cast<std::size_t>(-1);

/// What a `.npy` header says.
struct npy_header {
  int major_version = 1;            ///< 1 or 2
  npy_dtype dtype = npy_dtype::f32;  ///< element type as stored
  std::vector<std::size_t> shape;   ///< C order; empty = scalar (one element)
  std::size_t data_offset = 0;      ///< bytes from the start of the file to the first element
  std::size_t count = 1;            ///< number of elements = product of shape
};

/// A whole `.npy` array, converted to element type `T` (float or double).
/// `data` is C order (row-major): element (i0, i1, ..., in) is at
/// ((i0 * shape[1] + i1) * shape[2] + ...) + in.
template <class T>
struct npy_array {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "npy_array holds float or double");
  std::vector<std::size_t> shape;      ///< extents, C order; empty = scalar
  npy_dtype stored = npy_dtype::f32;   ///< dtype the file held (before conversion to T)
  std::vector<T> data;                 ///< product(shape) values, C order

  std::size_t rank() const noexcept { return shape.size(); }
  std::size_t size() const noexcept { return data.size(); }
};

using npy_array_f32 = npy_array<float>;
using npy_array_f64 = npy_array<double>;

namespace detail {

/// IEEE binary16 bits -> float32, exact for every input (sparq::to_float: signed zeros,
/// subnormals, infinities, NaN payloads kept).
inline float npy_half_to_float(std::uint16_t h) noexcept { return to_float(f16{h}); }

inline std::uint16_t npy_load_u16(const unsigned char* p) noexcept {
  return static_cast<std::uint16_t>(p[0] | (p[1] << 8));
}
inline std::uint32_t npy_load_u32(const unsigned char* p) noexcept {
  return static_cast<std::uint32_t>(p[0]) | (static_cast<std::uint32_t>(p[1]) << 8) |
         (static_cast<std::uint32_t>(p[2]) << 16) | (static_cast<std::uint32_t>(p[3]) << 24);
}
inline std::uint64_t npy_load_u64(const unsigned char* p) noexcept {
  return static_cast<std::uint64_t>(npy_load_u32(p)) |
         (static_cast<std::uint64_t>(npy_load_u32(p + 4)) << 32);
}

template <class... Parts>
[[noreturn]] inline void npy_fail(const std::string& path, Parts&&... parts) {
  std::ostringstream os;
  os << "sparq::io: " << path << ": ";
  (os << ... << std::forward<Parts>(parts));
  throw format_error(os.str());
}

inline std::string npy_shape_string(const std::vector<std::size_t>& shape) {
  std::ostringstream os;
  os << '(';
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) os << ", ";
    if (shape[i] == npy_any)
      os << '*';
    else
      os << shape[i];
  }
  if (shape.size() == 1) os << ',';
  os << ')';
  return os.str();
}

/// Reads a whole file. Missing file, directory and unreadable file are distinct messages.
inline std::vector<unsigned char> npy_read_file(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (st.type() == fs::file_type::none) npy_fail(path, "cannot access file: ", ec.message());
  if (!fs::exists(st)) npy_fail(path, "file not found");
  if (fs::is_directory(st)) npy_fail(path, "is a directory, not a .npy file");
  std::ifstream in(path, std::ios::binary);
  if (!in) npy_fail(path, "cannot open file for reading");
  in.seekg(0, std::ios::end);
  const std::streamoff end = in.tellg();
  if (end < 0) npy_fail(path, "cannot determine file size");
  in.seekg(0, std::ios::beg);
  std::vector<unsigned char> bytes(static_cast<std::size_t>(end));
  if (!bytes.empty()) {
    in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    if (static_cast<std::size_t>(in.gcount()) != bytes.size())
      npy_fail(path, "read error: expected ", bytes.size(), " bytes, read ", in.gcount());
  }
  return bytes;
}

/// Parser for the header dict, a Python literal such as
///   {'descr': '<f4', 'fortran_order': False, 'shape': (8, 64), }
/// Accepts exactly the literals NumPy writes (single- or double-quoted strings, True/False,
/// tuples of non-negative integers with optional trailing comma), in any key order, with any
/// whitespace. Exactly the three keys must be present, as NumPy requires.
class npy_header_parser {
 public:
  npy_header_parser(const std::string& path, const char* begin, const char* end)
      : path_(path), p_(begin), end_(end) {}

  void parse(npy_header& h) {
    bool have_descr = false, have_fortran = false, have_shape = false;
    skip_ws();
    expect('{');
    skip_ws();
    while (!at('}')) {
      const std::string key = parse_string();
      skip_ws();
      expect(':');
      skip_ws();
      if (key == "descr") {
        if (have_descr) fail("duplicate key 'descr'");
        have_descr = true;
        if (!at('\'') && !at('"'))
          bad("'descr' is not a string (structured dtypes are not supported; supported: "
              "'<f2' float16, '<f4' float32, '<f8' float64)");
        const std::string d = parse_string();
        h.dtype = dtype_from_descr(d);
      } else if (key == "fortran_order") {
        if (have_fortran) fail("duplicate key 'fortran_order'");
        have_fortran = true;
        if (parse_bool()) bad("fortran_order is True: only C-order arrays are supported");
      } else if (key == "shape") {
        if (have_shape) fail("duplicate key 'shape'");
        have_shape = true;
        h.shape = parse_shape();
      } else {
        fail("unexpected key '", key, "' (expected exactly 'descr', 'fortran_order', 'shape')");
      }
      skip_ws();
      if (at(',')) {
        ++p_;
        skip_ws();
      } else if (!at('}')) {
        fail("expected ',' or '}' after the value of '", key, "'");
      }
    }
    ++p_;  // '}'
    skip_ws();
    if (p_ != end_) fail("unexpected characters after the closing '}'");
    if (!have_descr) fail("missing key 'descr'");
    if (!have_fortran) fail("missing key 'fortran_order'");
    if (!have_shape) fail("missing key 'shape'");
  }

 private:
  template <class... Parts>
  [[noreturn]] void fail(Parts&&... parts) {
    npy_fail(path_, "malformed header dict: ", std::forward<Parts>(parts)...);
  }
  template <class... Parts>
  [[noreturn]] void bad(Parts&&... parts) {
    npy_fail(path_, std::forward<Parts>(parts)...);
  }
  bool at(char c) const noexcept { return p_ != end_ && *p_ == c; }
  void skip_ws() noexcept {
    while (p_ != end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r')) ++p_;
  }
  void expect(char c) {
    if (!at(c)) {
      if (p_ == end_) fail("expected '", c, "', found end of header");
      fail("expected '", c, "', found '", *p_, "'");
    }
    ++p_;
  }
  std::string parse_string() {
    if (!at('\'') && !at('"')) fail("expected a quoted string");
    const char q = *p_++;
    std::string s;
    while (p_ != end_ && *p_ != q) {
      if (*p_ == '\\') fail("escape sequences are not supported in header strings");
      s += *p_++;
    }
    if (p_ == end_) fail("unterminated string");
    ++p_;
    return s;
  }
  bool parse_bool() {
    if (match("True")) return true;
    if (match("False")) return false;
    fail("'fortran_order' must be True or False");
  }
  bool match(const char* word) {
    const std::size_t n = std::strlen(word);
    if (static_cast<std::size_t>(end_ - p_) < n || std::memcmp(p_, word, n) != 0) return false;
    p_ += n;
    return true;
  }
  std::vector<std::size_t> parse_shape() {
    std::vector<std::size_t> shape;
    expect('(');
    skip_ws();
    while (!at(')')) {
      if (p_ == end_ || *p_ < '0' || *p_ > '9')
        fail("'shape' must be a tuple of non-negative integers");
      std::size_t v = 0;
      while (p_ != end_ && *p_ >= '0' && *p_ <= '9') {
        const std::size_t digit = static_cast<std::size_t>(*p_ - '0');
        if (v > (std::numeric_limits<std::size_t>::max() - digit) / 10)
          fail("'shape' extent is too large");
        v = v * 10 + digit;
        ++p_;
      }
      if (at('L')) ++p_;  // Python 2 long suffix, as old NumPy wrote it
      shape.push_back(v);
      skip_ws();
      if (at(',')) {
        ++p_;
        skip_ws();
      } else if (!at(')')) {
        fail("expected ',' or ')' in 'shape'");
      }
    }
    ++p_;  // ')'
    return shape;
  }
  npy_dtype dtype_from_descr(const std::string& d) {
    // Only '<' (little endian): NumPy writes it for floats saved on little-endian hosts;
    // '>' would need byte swapping we have no use for, '=' names the writer's unknown order.
    if (d == "<f2") return npy_dtype::f16;
    if (d == "<f4") return npy_dtype::f32;
    if (d == "<f8") return npy_dtype::f64;
    bad("unsupported dtype '", d,
        "' (supported: '<f2' float16, '<f4' float32, '<f8' float64; little endian only)");
  }

  const std::string& path_;
  const char* p_;
  const char* end_;
};

/// Parses the preamble and header of an in-memory file; checks the data size.
inline npy_header npy_parse_header(const std::string& path,
                                   const std::vector<unsigned char>& bytes) {
  static const unsigned char magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
  if (bytes.size() < 6 || std::memcmp(bytes.data(), magic, 6) != 0)
    npy_fail(path, "bad magic: not a .npy file (expected the bytes \\x93NUMPY at offset 0",
             bytes.size() < 6 ? "; file is shorter than 6 bytes)" : ")");
  if (bytes.size() < 8) npy_fail(path, "truncated preamble: file has ", bytes.size(), " bytes");
  npy_header h;
  const int major = bytes[6], minor = bytes[7];
  std::size_t header_len = 0, prefix = 0;
  if (major == 1) {
    prefix = 10;
    if (bytes.size() < prefix)
      npy_fail(path, "truncated preamble: file has ", bytes.size(), " bytes");
    header_len = detail::npy_load_u16(bytes.data() + 8);
  } else if (major == 2) {
    prefix = 12;
    if (bytes.size() < prefix)
      npy_fail(path, "truncated preamble: file has ", bytes.size(), " bytes");
    header_len = detail::npy_load_u32(bytes.data() + 8);
  } else {
    npy_fail(path, "unsupported .npy format version ", major, ".", minor,
             " (supported: 1.0 and 2.0)");
  }
  if (minor != 0)
    npy_fail(path, "unsupported .npy format version ", major, ".", minor,
             " (supported: 1.0 and 2.0)");
  h.major_version = major;
  if (header_len > bytes.size() - prefix)
    npy_fail(path, "truncated header: header length field says ", header_len,
             " bytes, but only ", bytes.size() - prefix, " bytes follow the preamble");
  const char* hb = reinterpret_cast<const char*>(bytes.data() + prefix);
  for (std::size_t i = 0; i < header_len; ++i)
    if (static_cast<unsigned char>(hb[i]) >= 0x80 || hb[i] == '\0')
      npy_fail(path, "malformed header dict: non-ASCII or NUL byte at header offset ", i);
  npy_header_parser(path, hb, hb + header_len).parse(h);
  h.data_offset = prefix + header_len;

  h.count = 1;
  for (std::size_t e : h.shape) {
    if (e != 0 && h.count > std::numeric_limits<std::size_t>::max() / e)
      npy_fail(path, "shape ", npy_shape_string(h.shape), " is too large");
    h.count *= e;
  }
  const std::size_t item = npy_itemsize(h.dtype);
  if (h.count > std::numeric_limits<std::size_t>::max() / item)
    npy_fail(path, "shape ", npy_shape_string(h.shape), " is too large");
  const std::size_t want = h.count * item;
  const std::size_t have = bytes.size() - h.data_offset;
  if (have < want)
    npy_fail(path, "truncated data: expected ", want, " bytes for shape ",
             npy_shape_string(h.shape), " of ", npy_descr(h.dtype), ", found ", have);
  if (have > want)
    npy_fail(path, "data size mismatch: expected ", want, " bytes for shape ",
             npy_shape_string(h.shape), " of ", npy_descr(h.dtype), ", found ", have,
             " (", have - want, " trailing bytes)");
  return h;
}

inline void npy_check_shape(const std::string& path, const std::vector<std::size_t>& got,
                            const std::vector<std::size_t>& expected) {
  bool ok = got.size() == expected.size();
  for (std::size_t i = 0; ok && i < got.size(); ++i)
    ok = expected[i] == npy_any || expected[i] == got[i];
  if (!ok)
    npy_fail(path, "shape mismatch: file has shape ", npy_shape_string(got), " (rank ",
             got.size(), "), expected ", npy_shape_string(expected), " (rank ", expected.size(),
             ")");
}

template <class T>
npy_array<T> npy_read(const std::string& path, const std::vector<std::size_t>* expected) {
  const std::vector<unsigned char> bytes = npy_read_file(path);
  const npy_header h = npy_parse_header(path, bytes);
  if (expected) npy_check_shape(path, h.shape, *expected);
  npy_array<T> a;
  a.shape = h.shape;
  a.stored = h.dtype;
  a.data.resize(h.count);
  const unsigned char* p = bytes.data() + h.data_offset;
  switch (h.dtype) {
    case npy_dtype::f16:
      for (std::size_t i = 0; i < h.count; ++i)
        a.data[i] = static_cast<T>(npy_half_to_float(npy_load_u16(p + 2 * i)));
      break;
    case npy_dtype::f32:
      for (std::size_t i = 0; i < h.count; ++i) {
        const std::uint32_t u = npy_load_u32(p + 4 * i);
        float f;
        std::memcpy(&f, &u, sizeof f);
        a.data[i] = static_cast<T>(f);
      }
      break;
    case npy_dtype::f64:
      for (std::size_t i = 0; i < h.count; ++i) {
        const std::uint64_t u = npy_load_u64(p + 8 * i);
        double d;
        std::memcpy(&d, &u, sizeof d);
        a.data[i] = static_cast<T>(d);  // f64 -> f32: round to nearest
      }
      break;
  }
  return a;
}

template <class T>
void npy_write(const std::string& path, const std::vector<std::size_t>& shape, const T* data,
               std::size_t n) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>);
  std::size_t count = 1;
  for (std::size_t e : shape) {
    if (e != 0 && count > std::numeric_limits<std::size_t>::max() / e)
      throw std::invalid_argument("sparq::io: " + path + ": shape " + npy_shape_string(shape) +
                                  " is too large");
    count *= e;
  }
  if (count != n)
    throw std::invalid_argument("sparq::io: " + path + ": shape " + npy_shape_string(shape) +
                                " holds " + std::to_string(count) + " elements, but " +
                                std::to_string(n) + " were given");
  std::string dict = std::string("{'descr': '") + (sizeof(T) == 4 ? "<f4" : "<f8") +
                     "', 'fortran_order': False, 'shape': " + npy_shape_string(shape) + ", }";
  // Pad with spaces so that magic(6) + version(2) + length(2) + header ends on a multiple of
  // 64 bytes, the last header byte being '\n'.
  const std::size_t unpadded = 10 + dict.size() + 1;
  dict.append((64 - unpadded % 64) % 64, ' ');
  dict += '\n';
  if (dict.size() > 0xffffu)
    throw std::invalid_argument("sparq::io: " + path + ": header too long for format 1.0");
  std::string out;
  out.reserve(10 + dict.size() + n * sizeof(T));
  out.append("\x93NUMPY\x01\x00", 8);
  out += static_cast<char>(dict.size() & 0xffu);
  out += static_cast<char>((dict.size() >> 8) & 0xffu);
  out += dict;
  for (std::size_t i = 0; i < n; ++i) {
    unsigned char b[sizeof(T)];
    if constexpr (sizeof(T) == 4) {
      std::uint32_t u;
      std::memcpy(&u, &data[i], 4);
      for (int k = 0; k < 4; ++k) b[k] = static_cast<unsigned char>(u >> (8 * k));
    } else {
      std::uint64_t u;
      std::memcpy(&u, &data[i], 8);
      for (int k = 0; k < 8; ++k) b[k] = static_cast<unsigned char>(u >> (8 * k));
    }
    out.append(reinterpret_cast<const char*>(b), sizeof(T));
  }
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) throw std::runtime_error("sparq::io: " + path + ": cannot open file for writing");
  f.write(out.data(), static_cast<std::streamsize>(out.size()));
  f.close();
  if (!f) throw std::runtime_error("sparq::io: " + path + ": write failed");
}

}  // namespace detail

/// Reads only the header of a `.npy` file (dtype, shape, data offset), after checking that
/// the file holds exactly the bytes the header promises. Throws `format_error`.
inline npy_header read_npy_header(const std::string& path) {
  return detail::npy_parse_header(path, detail::npy_read_file(path));
}

/// Reads a `.npy` file as float32 (f16/f32 exact, f64 rounded to nearest).
/// Throws `format_error` on a missing or malformed file.
inline npy_array_f32 read_npy_f32(const std::string& path) {
  return detail::npy_read<float>(path, nullptr);
}
/// As above, and also throws `format_error` unless the shape matches `expected` (same rank;
/// each extent equal, or `npy_any`).
inline npy_array_f32 read_npy_f32(const std::string& path,
                                  const std::vector<std::size_t>& expected) {
  return detail::npy_read<float>(path, &expected);
}

/// Reads a `.npy` file as float64 (exact for f16, f32 and f64).
/// Throws `format_error` on a missing or malformed file.
inline npy_array_f64 read_npy_f64(const std::string& path) {
  return detail::npy_read<double>(path, nullptr);
}
/// As above, with a shape check against `expected` (see `read_npy_f32`).
inline npy_array_f64 read_npy_f64(const std::string& path,
                                  const std::vector<std::size_t>& expected) {
  return detail::npy_read<double>(path, &expected);
}

/// Writes `data` (product(shape) float32 values, C order) as a format-1.0 `.npy` file
/// ('<f4', fortran_order False). Throws `std::invalid_argument` if `data.size()` does not
/// match `shape`, `std::runtime_error` if the file cannot be written.
inline void write_npy_f32(const std::string& path, const std::vector<std::size_t>& shape,
                          const std::vector<float>& data) {
  detail::npy_write<float>(path, shape, data.data(), data.size());
}

/// Writes float64 values ('<f8'); otherwise as `write_npy_f32`.
inline void write_npy_f64(const std::string& path, const std::vector<std::size_t>& shape,
                          const std::vector<double>& data) {
  detail::npy_write<double>(path, shape, data.data(), data.size());
}

}  // namespace sparq::io
