#pragma once
/// \file json.hpp
/// A small JSON reader (RFC 8259) for trace manifests. Internal: `sparq::io::detail`.
///
/// Enough for manifest.json (and a safetensors header) and nothing more: objects, arrays,
/// strings with every escape (including \uXXXX surrogate pairs, encoded to UTF-8), numbers,
/// true/false/null. Objects keep their members in document order; duplicate keys are an error
/// (the manifest has no use for them and silently picking one would hide a mistake). Nesting
/// is limited to 256 levels so hostile input cannot overflow the stack. Numbers are parsed
/// with `std::from_chars`, so the result does not depend on the C locale; a number written as
/// an integer that fits `std::int64_t` also keeps its exact value (`json_value::integer`), so
/// byte offsets need not go through double, which is exact only up to 2^53.

#include <charconv>
#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "sparq/io/npy.hpp"  // format_error

namespace sparq::io::detail {

/// One JSON value. Only the members for its `type` are meaningful.
struct json_value {
  enum class kind { null, boolean, number, string, array, object };

  kind type = kind::null;
  bool boolean = false;
  /// A number's value as a double (rounded to nearest when it has more than 53 bits).
  double number = 0.0;
  /// True when the number was written as an integer (no '.', no exponent) and its value fits
  /// `std::int64_t`; `integer` then holds it exactly. False for non-integral numbers (`1.0`,
  /// `1e3`), for integers outside the int64 range (only `number` holds those, rounded) and for
  /// every value that is not a number.
  bool integral = false;
  /// The exact value when `integral`, else 0.
  std::int64_t integer = 0;
  std::string string;
  /// Array elements, or object member values (then `keys[i]` names `items[i]`).
  std::vector<json_value> items;
  std::vector<std::string> keys;

  bool is_null() const noexcept { return type == kind::null; }
  bool is_bool() const noexcept { return type == kind::boolean; }
  bool is_number() const noexcept { return type == kind::number; }
  bool is_string() const noexcept { return type == kind::string; }
  bool is_array() const noexcept { return type == kind::array; }
  bool is_object() const noexcept { return type == kind::object; }

  /// Member `key` of an object; nullptr if this is not an object or has no such member.
  const json_value* find(const std::string& key) const noexcept {
    if (type != kind::object) return nullptr;
    for (std::size_t i = 0; i < keys.size(); ++i)
      if (keys[i] == key) return &items[i];
    return nullptr;
  }
};

/// Name of a value's kind, for error messages ("a string", "an array", ...).
inline const char* json_kind_name(json_value::kind k) noexcept {
  switch (k) {
    case json_value::kind::null: return "null";
    case json_value::kind::boolean: return "a boolean";
    case json_value::kind::number: return "a number";
    case json_value::kind::string: return "a string";
    case json_value::kind::array: return "an array";
    case json_value::kind::object: return "an object";
  }
  return "?";
}

class json_parser {
 public:
  /// `what` names the document in error messages (usually its path).
  json_parser(const char* begin, const char* end, std::string what)
      : begin_(begin), p_(begin), end_(end), what_(std::move(what)) {}

  json_value parse_document() {
    skip_ws();
    json_value v = parse_value(0);
    skip_ws();
    if (p_ != end_) fail("unexpected characters after the JSON value");
    return v;
  }

 private:
  static constexpr int max_depth = 256;

  template <class... Parts>
  [[noreturn]] void fail(Parts&&... parts) const {
    // Line and column (1-based, in bytes) of the current position.
    std::size_t line = 1, col = 1;
    for (const char* q = begin_; q < p_ && q < end_; ++q) {
      if (*q == '\n') {
        ++line;
        col = 1;
      } else {
        ++col;
      }
    }
    std::ostringstream os;
    os << "sparq::io: " << what_ << ": invalid JSON at line " << line << ", column " << col
       << ": ";
    (os << ... << std::forward<Parts>(parts));
    throw format_error(os.str());
  }

  void skip_ws() noexcept {
    while (p_ != end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r')) ++p_;
  }

  bool match(const char* word) noexcept {
    const char* q = p_;
    for (; *word; ++word, ++q)
      if (q == end_ || *q != *word) return false;
    p_ = q;
    return true;
  }

  json_value parse_value(int depth) {
    if (depth > max_depth) fail("nesting deeper than ", max_depth, " levels");
    if (p_ == end_) fail("unexpected end of input, expected a value");
    json_value v;
    switch (*p_) {
      case '{': parse_object(v, depth); break;
      case '[': parse_array(v, depth); break;
      case '"':
        v.type = json_value::kind::string;
        v.string = parse_string();
        break;
      case 't':
      case 'f':
      case 'n':
        if (match("true")) {
          v.type = json_value::kind::boolean;
          v.boolean = true;
        } else if (match("false")) {
          v.type = json_value::kind::boolean;
        } else if (!match("null")) {
          fail("invalid literal");
        }
        break;
      default:
        if (*p_ == '-' || (*p_ >= '0' && *p_ <= '9')) {
          parse_number(v);
        } else {
          fail("unexpected character '", *p_, "'");
        }
    }
    return v;
  }

  void parse_object(json_value& v, int depth) {
    v.type = json_value::kind::object;
    ++p_;  // '{'
    skip_ws();
    if (p_ != end_ && *p_ == '}') {
      ++p_;
      return;
    }
    for (;;) {
      skip_ws();
      if (p_ == end_ || *p_ != '"') fail("expected a string key");
      std::string key = parse_string();
      for (const std::string& k : v.keys)
        if (k == key) fail("duplicate key \"", key, "\"");
      skip_ws();
      if (p_ == end_ || *p_ != ':') fail("expected ':' after key \"", key, "\"");
      ++p_;
      skip_ws();
      json_value item = parse_value(depth + 1);
      v.keys.push_back(std::move(key));
      v.items.push_back(std::move(item));
      skip_ws();
      if (p_ != end_ && *p_ == ',') {
        ++p_;
        continue;
      }
      if (p_ != end_ && *p_ == '}') {
        ++p_;
        return;
      }
      fail("expected ',' or '}' in object");
    }
  }

  void parse_array(json_value& v, int depth) {
    v.type = json_value::kind::array;
    ++p_;  // '['
    skip_ws();
    if (p_ != end_ && *p_ == ']') {
      ++p_;
      return;
    }
    for (;;) {
      skip_ws();
      v.items.push_back(parse_value(depth + 1));
      skip_ws();
      if (p_ != end_ && *p_ == ',') {
        ++p_;
        continue;
      }
      if (p_ != end_ && *p_ == ']') {
        ++p_;
        return;
      }
      fail("expected ',' or ']' in array");
    }
  }

  unsigned parse_hex4() {
    if (end_ - p_ < 4) fail("truncated \\u escape");
    unsigned u = 0;
    for (int i = 0; i < 4; ++i, ++p_) {
      const char c = *p_;
      u <<= 4;
      if (c >= '0' && c <= '9')
        u |= static_cast<unsigned>(c - '0');
      else if (c >= 'a' && c <= 'f')
        u |= static_cast<unsigned>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F')
        u |= static_cast<unsigned>(c - 'A' + 10);
      else
        fail("invalid hex digit in \\u escape");
    }
    return u;
  }

  static void append_utf8(std::string& s, std::uint32_t cp) {
    if (cp < 0x80) {
      s += static_cast<char>(cp);
    } else if (cp < 0x800) {
      s += static_cast<char>(0xc0 | (cp >> 6));
      s += static_cast<char>(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
      s += static_cast<char>(0xe0 | (cp >> 12));
      s += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
      s += static_cast<char>(0x80 | (cp & 0x3f));
    } else {
      s += static_cast<char>(0xf0 | (cp >> 18));
      s += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
      s += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
      s += static_cast<char>(0x80 | (cp & 0x3f));
    }
  }

  std::string parse_string() {
    ++p_;  // opening quote
    std::string s;
    for (;;) {
      if (p_ == end_) fail("unterminated string");
      const char c = *p_++;
      if (c == '"') return s;
      if (static_cast<unsigned char>(c) < 0x20) fail("unescaped control character in string");
      if (c != '\\') {
        s += c;
        continue;
      }
      if (p_ == end_) fail("unterminated escape");
      const char e = *p_++;
      switch (e) {
        case '"': s += '"'; break;
        case '\\': s += '\\'; break;
        case '/': s += '/'; break;
        case 'b': s += '\b'; break;
        case 'f': s += '\f'; break;
        case 'n': s += '\n'; break;
        case 'r': s += '\r'; break;
        case 't': s += '\t'; break;
        case 'u': {
          std::uint32_t cp = parse_hex4();
          if (cp >= 0xd800 && cp <= 0xdbff) {
            if (end_ - p_ < 2 || p_[0] != '\\' || p_[1] != 'u')
              fail("high surrogate not followed by a \\u low surrogate");
            p_ += 2;
            const std::uint32_t lo = parse_hex4();
            if (lo < 0xdc00 || lo > 0xdfff) fail("invalid low surrogate");
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
          } else if (cp >= 0xdc00 && cp <= 0xdfff) {
            fail("unpaired low surrogate");
          }
          append_utf8(s, cp);
          break;
        }
        default: fail("invalid escape '\\", e, "'");
      }
    }
  }

  /// Sets `v` to the number at `p_`: `number` always, `integral`/`integer` when it is written
  /// as an integer that fits int64.
  void parse_number(json_value& v) {
    // Validate the JSON grammar first (from_chars alone would accept "01", "1.", "inf").
    const char* start = p_;
    bool integral = true;
    const char* q = p_;
    if (q != end_ && *q == '-') ++q;
    if (q == end_) fail("invalid number");
    if (*q == '0') {
      ++q;
    } else if (*q >= '1' && *q <= '9') {
      while (q != end_ && *q >= '0' && *q <= '9') ++q;
    } else {
      fail("invalid number");
    }
    if (q != end_ && *q == '.') {
      integral = false;
      ++q;
      if (q == end_ || *q < '0' || *q > '9') fail("invalid number: digit expected after '.'");
      while (q != end_ && *q >= '0' && *q <= '9') ++q;
    }
    if (q != end_ && (*q == 'e' || *q == 'E')) {
      integral = false;
      ++q;
      if (q != end_ && (*q == '+' || *q == '-')) ++q;
      if (q == end_ || *q < '0' || *q > '9') fail("invalid number: digit expected in exponent");
      while (q != end_ && *q >= '0' && *q <= '9') ++q;
    }
    double d = 0.0;
    const auto res = std::from_chars(start, q, d);
    if (res.ec == std::errc::result_out_of_range) fail("number out of range");
    if (res.ec != std::errc() || res.ptr != q) fail("invalid number");
    v.type = json_value::kind::number;
    v.number = d;
    if (integral) {
      // Out of int64 range (errc::result_out_of_range) leaves the number non-integral.
      std::int64_t i = 0;
      const auto ires = std::from_chars(start, q, i);
      if (ires.ec == std::errc() && ires.ptr == q) {
        v.integral = true;
        v.integer = i;
      }
    }
    p_ = q;
  }

  const char* begin_;
  const char* p_;
  const char* end_;
  std::string what_;
};

/// Parses a whole JSON document held in `text`; `what` names it in error messages.
/// Throws `format_error` with line and column on any syntax error.
inline json_value parse_json(const std::string& text, const std::string& what) {
  return json_parser(text.data(), text.data() + text.size(), what).parse_document();
}

}  // namespace sparq::io::detail
