// Reader for the safetensors format: an 8-byte little-endian header length N, N bytes of JSON
// mapping tensor names to {dtype, shape, data_offsets}, then the raw data section (offsets are
// relative to its start). Tensors are widened to fp32 on load. The header is parsed with
// sparq's JSON reader (sparq/io/json.hpp), which keeps integers exact: data_offsets can
// exceed 2^53 in principle, so they must not go through double.
#pragma once

#include <sparq/dtype.hpp>
#include <sparq/io/json.hpp>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace tiny_lm {

using sparq::io::detail::json_kind_name;
using sparq::io::detail::json_value;
using sparq::io::detail::parse_json;

/// Exact fp16/bf16 -> fp32 with sparq's own conversions (plain bit operations, so the loader
/// does not depend on the -march the example is built for).
inline float f16_to_f32(std::uint16_t h) { return sparq::to_float(sparq::f16{h}); }
inline float bf16_to_f32(std::uint16_t b) { return sparq::to_float(sparq::bf16{b}); }

/// What the header says about one tensor.
struct tensor_info {
    std::string dtype;                ///< "F16", "BF16", "F32", ... as written in the header
    std::vector<std::int64_t> shape;  ///< row-major extents
    std::uint64_t begin = 0;          ///< byte offsets into the data section, [begin, end)
    std::uint64_t end = 0;
};

inline std::string shape_to_string(const std::vector<std::int64_t>& shape) {
    std::ostringstream s;
    s << '[';
    for (std::size_t i = 0; i < shape.size(); ++i) s << (i ? ", " : "") << shape[i];
    s << ']';
    return s.str();
}

/// A safetensors file read whole into memory (this model is 27 MB; mmap would save a copy but
/// the weights are widened to fp32 anyway, so the file bytes are short-lived).
class safetensors_file {
public:
    explicit safetensors_file(std::string path) : path_(std::move(path)) {
        std::ifstream in(path_, std::ios::binary | std::ios::ate);
        if (!in) throw std::runtime_error(path_ + ": cannot open file");
        const std::streamoff size = in.tellg();
        if (size < 8)
            throw std::runtime_error(path_ + ": file is " + std::to_string(size) +
                                     " bytes, too short for the 8-byte header length");
        bytes_.resize(static_cast<std::size_t>(size));
        in.seekg(0);
        if (!in.read(reinterpret_cast<char*>(bytes_.data()), size))
            throw std::runtime_error(path_ + ": read failed");

        std::uint64_t header_len = 0;
        for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes_[static_cast<std::size_t>(i)];
        if (header_len > bytes_.size() - 8)
            throw std::runtime_error(path_ + ": truncated file: header claims " +
                                     std::to_string(header_len) + " bytes but only " +
                                     std::to_string(bytes_.size() - 8) + " follow");
        data_offset_ = 8 + header_len;

        // Syntax errors throw sparq::io::format_error (a std::runtime_error) naming this file,
        // with line and column inside the header.
        const char* h = reinterpret_cast<const char*>(bytes_.data()) + 8;
        const json_value header =
            parse_json(std::string(h, static_cast<std::size_t>(header_len)), path_ + " (header)");
        if (!header.is_object())
            throw std::runtime_error(path_ + ": header is not a JSON object but " +
                                     json_kind_name(header.type));
        // The reader rejects duplicate keys, so every tensor name is unique.
        for (std::size_t i = 0; i < header.keys.size(); ++i) {
            const std::string& name = header.keys[i];
            if (name == "__metadata__") continue;
            tensors_.emplace(name, parse_entry(name, header.items[i]));
        }
    }

    const std::string& path() const { return path_; }
    bool contains(const std::string& name) const { return tensors_.count(name) != 0; }
    const std::map<std::string, tensor_info>& tensors() const { return tensors_; }

    const tensor_info& info(const std::string& name) const {
        auto it = tensors_.find(name);
        if (it == tensors_.end())
            throw std::runtime_error(path_ + ": missing tensor '" + name + "'");
        return it->second;
    }

    /// Widens tensor `name` to fp32 into out[0 .. numel). Throws, naming the file and the
    /// tensor, when the tensor is missing, its shape differs from `expected_shape`, its dtype
    /// is not F16/BF16/F32, or its bytes lie past the end of the file.
    void load_f32(const std::string& name, const std::vector<std::int64_t>& expected_shape,
                  float* out) const {
        const tensor_info& t = info(name);
        const std::string where = path_ + ": tensor '" + name + "'";
        if (t.shape != expected_shape)
            throw std::runtime_error(where + " has shape " + shape_to_string(t.shape) +
                                     ", expected " + shape_to_string(expected_shape));
        std::size_t elem;
        if (t.dtype == "F16" || t.dtype == "BF16") elem = 2;
        else if (t.dtype == "F32") elem = 4;
        else throw std::runtime_error(where + " has dtype " + t.dtype + ", expected F16, BF16 or F32");

        std::uint64_t numel = 1;
        for (std::int64_t e : t.shape) numel *= static_cast<std::uint64_t>(e);
        if (t.end - t.begin != numel * elem)
            throw std::runtime_error(where + ": data_offsets [" + std::to_string(t.begin) + ", " +
                                     std::to_string(t.end) + ") hold " +
                                     std::to_string(t.end - t.begin) + " bytes, but " + t.dtype +
                                     " " + shape_to_string(t.shape) + " needs " +
                                     std::to_string(numel * elem));
        const std::uint64_t data_size = bytes_.size() - data_offset_;
        if (t.end > data_size)
            throw std::runtime_error(where + ": truncated file: tensor occupies data bytes [" +
                                     std::to_string(t.begin) + ", " + std::to_string(t.end) +
                                     ") but the data section has only " +
                                     std::to_string(data_size) + " bytes");

        const unsigned char* src = bytes_.data() + data_offset_ + t.begin;
        const bool is_f16 = t.dtype == "F16";
        // memcpy per element: the data section has no alignment guarantee.
        for (std::uint64_t i = 0; i < numel; ++i) {
            if (elem == 4) {
                std::memcpy(&out[i], src + 4 * i, 4);
            } else {
                std::uint16_t v;
                std::memcpy(&v, src + 2 * i, 2);
                out[i] = is_f16 ? f16_to_f32(v) : bf16_to_f32(v);
            }
        }
    }

private:
    std::string path_;
    std::vector<unsigned char> bytes_;
    std::uint64_t data_offset_ = 0;
    std::map<std::string, tensor_info> tensors_;

    tensor_info parse_entry(const std::string& name, const json_value& entry) const {
        const std::string where = path_ + ": header entry for tensor '" + name + "'";
        if (!entry.is_object())
            throw std::runtime_error(where + " is not an object but " + json_kind_name(entry.type));
        tensor_info t;
        const json_value* dtype = entry.find("dtype");
        if (!dtype || !dtype->is_string()) throw std::runtime_error(where + " has no string 'dtype'");
        t.dtype = dtype->string;
        const json_value* shape = entry.find("shape");
        if (!shape || !shape->is_array()) throw std::runtime_error(where + " has no array 'shape'");
        for (const json_value& e : shape->items) {
            // `integral` only for numbers written as integers that fit int64.
            if (!e.is_number() || !e.integral || e.integer < 0)
                throw std::runtime_error(where + " has a non-integer or negative extent");
            t.shape.push_back(e.integer);
        }
        // Exact int64 values, never the double: offsets past 2^53 must not be rounded.
        const json_value* off = entry.find("data_offsets");
        if (!off || !off->is_array() || off->items.size() != 2 || !off->items[0].integral ||
            !off->items[1].integral || off->items[0].integer < 0 ||
            off->items[1].integer < off->items[0].integer)
            throw std::runtime_error(where + " has malformed 'data_offsets' (need [begin, end])");
        t.begin = static_cast<std::uint64_t>(off->items[0].integer);
        t.end = static_cast<std::uint64_t>(off->items[1].integer);
        return t;
    }
};

}  // namespace tiny_lm
