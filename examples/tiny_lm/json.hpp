// Minimal JSON reader for the two small documents this example reads: a safetensors header
// and config.json. Not a general-purpose library: no streaming, no \u surrogate pairs beyond
// UTF-8 encoding of the code unit, documents are a few kilobytes.
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace tiny_lm {

/// One parsed JSON value. Objects keep their keys sorted (std::map): lookups by name are all
/// this example needs, and the safetensors format does not give key order a meaning.
struct json_value {
    enum class kind { null, boolean, number, string, array, object };

    kind type = kind::null;
    bool boolean = false;
    double number = 0.0;
    /// Exact value when the number was written as an integer; data_offsets can exceed 2^53 in
    /// principle, so they must not go through double.
    bool is_integer = false;
    std::int64_t integer = 0;
    std::string string;
    std::vector<json_value> array;
    std::map<std::string, json_value> object;

    bool is_object() const { return type == kind::object; }
    bool is_array() const { return type == kind::array; }
    bool is_string() const { return type == kind::string; }
    bool is_number() const { return type == kind::number; }

    /// nullptr when this is not an object or has no such key.
    const json_value* find(const std::string& key) const {
        if (type != kind::object) return nullptr;
        auto it = object.find(key);
        return it == object.end() ? nullptr : &it->second;
    }
};

namespace detail {

class json_parser {
public:
    json_parser(const char* begin, const char* end, std::string what)
        : p_(begin), begin_(begin), end_(end), what_(std::move(what)) {}

    json_value parse_document() {
        json_value v = parse_value(0);
        skip_space();
        if (p_ != end_) fail("trailing characters after the JSON value");
        return v;
    }

private:
    const char* p_;
    const char* begin_;
    const char* end_;
    std::string what_;

    [[noreturn]] void fail(const std::string& msg) const {
        throw std::runtime_error(what_ + ": invalid JSON at byte " +
                                 std::to_string(p_ - begin_) + ": " + msg);
    }

    void skip_space() {
        while (p_ != end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r')) ++p_;
    }

    bool consume_literal(const char* lit) {
        const char* q = p_;
        for (; *lit; ++lit, ++q)
            if (q == end_ || *q != *lit) return false;
        p_ = q;
        return true;
    }

    json_value parse_value(int depth) {
        // Bounded recursion: a hostile header must not overflow the stack.
        if (depth > 64) fail("nesting deeper than 64");
        skip_space();
        if (p_ == end_) fail("unexpected end of input");
        json_value v;
        switch (*p_) {
        case '{': parse_object(v, depth); break;
        case '[': parse_array(v, depth); break;
        case '"':
            v.type = json_value::kind::string;
            v.string = parse_string();
            break;
        case 't':
            if (!consume_literal("true")) fail("bad literal");
            v.type = json_value::kind::boolean;
            v.boolean = true;
            break;
        case 'f':
            if (!consume_literal("false")) fail("bad literal");
            v.type = json_value::kind::boolean;
            break;
        case 'n':
            if (!consume_literal("null")) fail("bad literal");
            break;
        default: parse_number(v); break;
        }
        return v;
    }

    void parse_object(json_value& v, int depth) {
        v.type = json_value::kind::object;
        ++p_;
        skip_space();
        if (p_ != end_ && *p_ == '}') {
            ++p_;
            return;
        }
        for (;;) {
            skip_space();
            if (p_ == end_ || *p_ != '"') fail("expected a string key");
            std::string key = parse_string();
            skip_space();
            if (p_ == end_ || *p_ != ':') fail("expected ':'");
            ++p_;
            json_value item = parse_value(depth + 1);
            if (!v.object.emplace(key, std::move(item)).second) fail("duplicate key '" + key + "'");
            skip_space();
            if (p_ == end_) fail("unterminated object");
            if (*p_ == ',') {
                ++p_;
                continue;
            }
            if (*p_ == '}') {
                ++p_;
                return;
            }
            fail("expected ',' or '}'");
        }
    }

    void parse_array(json_value& v, int depth) {
        v.type = json_value::kind::array;
        ++p_;
        skip_space();
        if (p_ != end_ && *p_ == ']') {
            ++p_;
            return;
        }
        for (;;) {
            v.array.push_back(parse_value(depth + 1));
            skip_space();
            if (p_ == end_) fail("unterminated array");
            if (*p_ == ',') {
                ++p_;
                continue;
            }
            if (*p_ == ']') {
                ++p_;
                return;
            }
            fail("expected ',' or ']'");
        }
    }

    static void append_utf8(std::string& out, unsigned cp) {
        if (cp < 0x80) {
            out += static_cast<char>(cp);
        } else if (cp < 0x800) {
            out += static_cast<char>(0xC0 | (cp >> 6));
            out += static_cast<char>(0x80 | (cp & 0x3F));
        } else {
            out += static_cast<char>(0xE0 | (cp >> 12));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (cp & 0x3F));
        }
    }

    std::string parse_string() {
        ++p_;  // opening quote
        std::string out;
        for (;;) {
            if (p_ == end_) fail("unterminated string");
            char c = *p_++;
            if (c == '"') return out;
            if (c != '\\') {
                out += c;
                continue;
            }
            if (p_ == end_) fail("unterminated escape");
            char e = *p_++;
            switch (e) {
            case '"': out += '"'; break;
            case '\\': out += '\\'; break;
            case '/': out += '/'; break;
            case 'b': out += '\b'; break;
            case 'f': out += '\f'; break;
            case 'n': out += '\n'; break;
            case 'r': out += '\r'; break;
            case 't': out += '\t'; break;
            case 'u': {
                if (end_ - p_ < 4) fail("short \\u escape");
                unsigned cp = 0;
                for (int i = 0; i < 4; ++i) {
                    char h = *p_++;
                    cp <<= 4;
                    if (h >= '0' && h <= '9') cp |= static_cast<unsigned>(h - '0');
                    else if (h >= 'a' && h <= 'f') cp |= static_cast<unsigned>(h - 'a' + 10);
                    else if (h >= 'A' && h <= 'F') cp |= static_cast<unsigned>(h - 'A' + 10);
                    else fail("bad hex digit in \\u escape");
                }
                append_utf8(out, cp);
                break;
            }
            default: fail(std::string("bad escape \\") + e);
            }
        }
    }

    void parse_number(json_value& v) {
        const char* start = p_;
        bool integral = true;
        if (p_ != end_ && *p_ == '-') ++p_;
        auto digits = [&] {
            const char* d = p_;
            while (p_ != end_ && *p_ >= '0' && *p_ <= '9') ++p_;
            return p_ != d;
        };
        if (!digits()) fail("expected a value");
        if (p_ != end_ && *p_ == '.') {
            integral = false;
            ++p_;
            if (!digits()) fail("expected digits after '.'");
        }
        if (p_ != end_ && (*p_ == 'e' || *p_ == 'E')) {
            integral = false;
            ++p_;
            if (p_ != end_ && (*p_ == '+' || *p_ == '-')) ++p_;
            if (!digits()) fail("expected exponent digits");
        }
        // strtod/strtoll need a terminated buffer; the header is not NUL-terminated.
        std::string text(start, p_);
        v.type = json_value::kind::number;
        v.number = std::strtod(text.c_str(), nullptr);
        if (integral) {
            errno = 0;
            long long i = std::strtoll(text.c_str(), nullptr, 10);
            if (errno == 0) {
                v.is_integer = true;
                v.integer = i;
            }
        }
    }
};

}  // namespace detail

/// Parses [begin, end) as one JSON document. `what` names the source (a file path) in errors.
inline json_value parse_json(const char* begin, const char* end, const std::string& what) {
    return detail::json_parser(begin, end, what).parse_document();
}

}  // namespace tiny_lm
