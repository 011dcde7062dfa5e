// Tests for sparq::io: the .npy reader/writer, the manifest parser and trace loading.
//
// Malformed inputs are built byte by byte in a per-test temporary directory. The real-trace
// test reads tests/data/traces (SPARQ_TEST_DATA_DIR overrides the data directory).

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "sparq/io/json.hpp"
#include "sparq/io/npy.hpp"
#include "sparq/io/trace.hpp"

#ifndef SPARQ_TEST_DATA_DIR
#define SPARQ_TEST_DATA_DIR "tests/data"
#endif

namespace fs = std::filesystem;
using sparq::io::format_error;

namespace {

// ---------------------------------------------------------------------------------------------
// Helpers

/// A tag unique to this test process, so parallel runs (ctest -j) do not share directories.
unsigned process_tag() {
  static const unsigned tag = std::random_device{}();
  return tag;
}

/// A fresh temporary directory per test, removed afterwards.
class io_test : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("sparq_io_test_" + std::to_string(process_tag()) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  fs::path dir_;
};

using bytes = std::string;

void write_bytes(const std::string& p, const bytes& b) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(b.data(), static_cast<std::streamsize>(b.size()));
  ASSERT_TRUE(f.good()) << p;
}

/// A complete .npy file: preamble for `major` (1: u16 length, else u32), `dict` padded to a
/// multiple of 64 with spaces and '\n', then `payload`.
bytes npy_file(const std::string& dict, const bytes& payload, int major = 1, int minor = 0) {
  const std::size_t prefix = major == 1 ? 10 : 12;
  std::string h = dict;
  const std::size_t unpadded = prefix + h.size() + 1;
  h.append((64 - unpadded % 64) % 64, ' ');
  h += '\n';
  bytes b("\x93NUMPY", 6);
  b += static_cast<char>(major);
  b += static_cast<char>(minor);
  const std::size_t n = h.size();
  b += static_cast<char>(n & 0xff);
  b += static_cast<char>((n >> 8) & 0xff);
  if (major != 1) {
    b += static_cast<char>((n >> 16) & 0xff);
    b += static_cast<char>((n >> 24) & 0xff);
  }
  return b + h + payload;
}

std::string dict_for(const std::string& descr, const std::string& shape,
                     const std::string& fortran = "False") {
  return "{'descr': '" + descr + "', 'fortran_order': " + fortran + ", 'shape': " + shape +
         ", }";
}

void put_u16(bytes& b, std::uint16_t v) {
  b += static_cast<char>(v & 0xff);
  b += static_cast<char>(v >> 8);
}
void put_f32(bytes& b, float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  for (int k = 0; k < 4; ++k) b += static_cast<char>((u >> (8 * k)) & 0xff);
}
void put_f64(bytes& b, double d) {
  std::uint64_t u;
  std::memcpy(&u, &d, 8);
  for (int k = 0; k < 8; ++k) b += static_cast<char>((u >> (8 * k)) & 0xff);
}

std::uint32_t bits_of(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

/// Independent binary16 decoder: the value from the definition, via ldexp.
double half_reference(std::uint16_t h) {
  const int s = h >> 15, e = (h >> 10) & 0x1f, m = h & 0x3ff;
  const double sign = s ? -1.0 : 1.0;
  if (e == 0) return sign * std::ldexp(static_cast<double>(m), -24);
  if (e == 31)
    return m ? std::numeric_limits<double>::quiet_NaN()
             : sign * std::numeric_limits<double>::infinity();
  return sign * std::ldexp(1.0 + m / 1024.0, e - 15);
}

/// Expects `f()` to throw format_error whose message contains every one of `parts`.
template <class F>
void expect_error(F&& f, std::initializer_list<std::string> parts) {
  try {
    f();
    ADD_FAILURE() << "expected sparq::io::format_error";
  } catch (const format_error& e) {
    const std::string msg = e.what();
    for (const std::string& p : parts)
      EXPECT_NE(msg.find(p), std::string::npos) << "message lacks \"" << p << "\": " << msg;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wrong exception type: " << e.what();
  }
}

std::string data_dir() { return std::string(SPARQ_TEST_DATA_DIR) + "/traces"; }

}  // namespace

// ---------------------------------------------------------------------------------------------
// .npy: round trips and dtypes

TEST_F(io_test, round_trip_f32) {
  const std::vector<std::size_t> shape = {3, 5, 7};
  std::vector<float> v(3 * 5 * 7);
  for (std::size_t i = 0; i < v.size(); ++i)
    v[i] = static_cast<float>(std::sin(0.37 * static_cast<double>(i)) * 1e3);
  v[4] = -0.0f;
  v[5] = std::numeric_limits<float>::denorm_min();
  v[6] = std::numeric_limits<float>::infinity();
  v[7] = std::numeric_limits<float>::quiet_NaN();
  sparq::io::write_npy_f32(path("a.npy"), shape, v);

  const auto a = sparq::io::read_npy_f32(path("a.npy"));
  EXPECT_EQ(a.shape, shape);
  EXPECT_EQ(a.stored, sparq::io::npy_dtype::f32);
  ASSERT_EQ(a.data.size(), v.size());
  for (std::size_t i = 0; i < v.size(); ++i) EXPECT_EQ(bits_of(a.data[i]), bits_of(v[i])) << i;

  // Format as numpy.save writes it: version 1.0, data offset a multiple of 64, '\n' last.
  std::ifstream f(path("a.npy"), std::ios::binary);
  const std::string raw((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  ASSERT_GE(raw.size(), 10u);
  EXPECT_EQ(raw.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
  const std::size_t hl = static_cast<unsigned char>(raw[8]) |
                         (static_cast<std::size_t>(static_cast<unsigned char>(raw[9])) << 8);
  EXPECT_EQ((10 + hl) % 64, 0u);
  EXPECT_EQ(raw[10 + hl - 1], '\n');
  EXPECT_EQ(raw.size(), 10 + hl + v.size() * 4);
  EXPECT_NE(raw.find("'shape': (3, 5, 7)"), std::string::npos);

  const auto h = sparq::io::read_npy_header(path("a.npy"));
  EXPECT_EQ(h.data_offset, 10 + hl);
  EXPECT_EQ(h.count, v.size());
  EXPECT_EQ(h.major_version, 1);

  // The same file read as float64 is an exact widening.
  const auto d = sparq::io::read_npy_f64(path("a.npy"), {3, 5, 7});
  for (std::size_t i = 0; i < v.size(); ++i)
    if (!std::isnan(v[i])) {
      EXPECT_EQ(d.data[i], static_cast<double>(v[i]));
    }
}

TEST_F(io_test, round_trip_shapes_rank_0_1_and_empty) {
  sparq::io::write_npy_f32(path("s.npy"), {}, {2.5f});
  auto s = sparq::io::read_npy_f32(path("s.npy"));
  EXPECT_TRUE(s.shape.empty());
  ASSERT_EQ(s.data.size(), 1u);
  EXPECT_EQ(s.data[0], 2.5f);

  sparq::io::write_npy_f32(path("v.npy"), {4}, {1, 2, 3, 4});
  auto v = sparq::io::read_npy_f32(path("v.npy"), {4});
  EXPECT_EQ(v.data, (std::vector<float>{1, 2, 3, 4}));

  sparq::io::write_npy_f32(path("e.npy"), {0, 64}, {});
  auto e = sparq::io::read_npy_f32(path("e.npy"), {sparq::io::npy_any, 64});
  EXPECT_EQ(e.shape, (std::vector<std::size_t>{0, 64}));
  EXPECT_TRUE(e.data.empty());
}

TEST_F(io_test, round_trip_f64) {
  const std::vector<double> v = {1.0 / 3.0, -1e-300, 1e300, 0.1};
  sparq::io::write_npy_f64(path("d.npy"), {2, 2}, v);
  const auto a = sparq::io::read_npy_f64(path("d.npy"), {2, 2});
  EXPECT_EQ(a.stored, sparq::io::npy_dtype::f64);
  EXPECT_EQ(a.data, v);  // exact
}

TEST_F(io_test, writer_rejects_size_mismatch) {
  EXPECT_THROW(sparq::io::write_npy_f32(path("x.npy"), {2, 3}, std::vector<float>(5)),
               std::invalid_argument);
}

TEST_F(io_test, hand_built_f64_read_as_f32_and_f64) {
  bytes payload;
  const double vals[] = {1.0 / 3.0, -2.5, 1e300, 1e-310 /* subnormal */, 0.1};
  for (double d : vals) put_f64(payload, d);
  write_bytes(path("o.npy"), npy_file(dict_for("<f8", "(5,)"), payload));

  const auto d = sparq::io::read_npy_f64(path("o.npy"), {5});
  EXPECT_EQ(d.stored, sparq::io::npy_dtype::f64);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(d.data[i], vals[i]);  // float64 kept exactly

  const auto f = sparq::io::read_npy_f32(path("o.npy"), {5});
  for (int i = 0; i < 5; ++i) EXPECT_EQ(f.data[i], static_cast<float>(vals[i]));  // rounded
  EXPECT_TRUE(std::isinf(f.data[2]));
  EXPECT_EQ(f.data[3], 0.0f);
}

TEST_F(io_test, hand_built_f16_special_values) {
  struct c {
    std::uint16_t bits;
    float expect;
  };
  const float inf = std::numeric_limits<float>::infinity();
  const c cases[] = {
      {0x0000, 0.0f},
      {0x3c00, 1.0f},
      {0xc000, -2.0f},
      {0x3555, 0.333251953125f},
      {0x7bff, 65504.0f},                       // largest normal
      {0x0400, 6.103515625e-05f},               // smallest normal 2^-14
      {0x0001, 5.9604644775390625e-08f},        // smallest subnormal 2^-24
      {0x03ff, 6.097555160522461e-05f},         // largest subnormal 1023 * 2^-24
      {0x0200, 3.0517578125e-05f},              // 2^-15
      {0x8001, -5.9604644775390625e-08f},       // negative subnormal
      {0x7c00, inf},
      {0xfc00, -inf},
  };
  bytes payload;
  for (const c& x : cases) put_u16(payload, x.bits);
  put_u16(payload, 0x8000);  // -0
  put_u16(payload, 0x7e00);  // quiet NaN
  put_u16(payload, 0x7c01);  // signalling NaN (payload 1)
  put_u16(payload, 0xfe00);  // negative quiet NaN
  const std::size_t n = std::size(cases) + 4;
  write_bytes(path("h.npy"),
              npy_file(dict_for("<f2", "(" + std::to_string(n) + ",)"), payload));

  const auto a = sparq::io::read_npy_f32(path("h.npy"), {n});
  EXPECT_EQ(a.stored, sparq::io::npy_dtype::f16);
  for (std::size_t i = 0; i < std::size(cases); ++i)
    EXPECT_EQ(bits_of(a.data[i]), bits_of(cases[i].expect)) << "half 0x" << std::hex
                                                             << cases[i].bits;
  const std::size_t k = std::size(cases);
  EXPECT_EQ(bits_of(a.data[k]), 0x80000000u);      // -0 keeps its sign
  EXPECT_EQ(bits_of(a.data[k + 1]), 0x7fc00000u);  // quiet NaN stays quiet
  EXPECT_EQ(bits_of(a.data[k + 2]), 0x7f802000u);  // payload kept: still a (signalling) NaN
  EXPECT_TRUE(std::isnan(a.data[k + 2]));
  EXPECT_EQ(bits_of(a.data[k + 3]), 0xffc00000u);

  // f16 read as f64 is the same exact value.
  const auto d = sparq::io::read_npy_f64(path("h.npy"));
  for (std::size_t i = 0; i < std::size(cases); ++i)
    EXPECT_EQ(d.data[i], static_cast<double>(cases[i].expect));
}

TEST_F(io_test, f16_conversion_is_exact_for_all_65536_values) {
  bytes payload;
  for (std::uint32_t h = 0; h < 65536; ++h) put_u16(payload, static_cast<std::uint16_t>(h));
  write_bytes(path("all.npy"), npy_file(dict_for("<f2", "(256, 256)"), payload));
  const auto a = sparq::io::read_npy_f32(path("all.npy"), {256, 256});
  ASSERT_EQ(a.data.size(), 65536u);
  for (std::uint32_t h = 0; h < 65536; ++h) {
    const double ref = half_reference(static_cast<std::uint16_t>(h));
    const float got = a.data[h];
    if (std::isnan(ref)) {
      ASSERT_TRUE(std::isnan(got)) << h;
    } else {
      ASSERT_EQ(static_cast<double>(got), ref) << h;
      ASSERT_EQ(std::signbit(got), (h & 0x8000u) != 0) << h;
    }
  }
}

TEST_F(io_test, version_2_and_header_variants) {
  bytes payload;
  put_f32(payload, 1.5f);
  put_f32(payload, -4.0f);
  // Version 2.0 (u32 header length).
  write_bytes(path("v2.npy"), npy_file(dict_for("<f4", "(2,)"), payload, 2));
  auto a = sparq::io::read_npy_f32(path("v2.npy"), {2});
  EXPECT_EQ(a.data, (std::vector<float>{1.5f, -4.0f}));
  EXPECT_EQ(sparq::io::read_npy_header(path("v2.npy")).major_version, 2);

  // Keys in another order, double quotes, no trailing comma, odd spacing, Python 2 'L'.
  write_bytes(path("var.npy"),
              npy_file("{ \"shape\" : ( 1 , 2L ) ,'fortran_order':False,  'descr':\"<f4\"}",
                       payload));
  auto b = sparq::io::read_npy_f32(path("var.npy"), {1, 2});
  EXPECT_EQ(b.data, (std::vector<float>{1.5f, -4.0f}));
}

// ---------------------------------------------------------------------------------------------
// .npy: every error case

TEST_F(io_test, missing_file) {
  expect_error([&] { sparq::io::read_npy_f32(path("nope.npy")); }, {"nope.npy", "not found"});
  expect_error([&] { sparq::io::read_npy_f32(dir_.string()); }, {"directory"});
}

TEST_F(io_test, bad_magic) {
  bytes b = npy_file(dict_for("<f4", "(1,)"), bytes(4, '\0'));
  b[1] = 'X';
  write_bytes(path("m.npy"), b);
  expect_error([&] { sparq::io::read_npy_f32(path("m.npy")); }, {"m.npy", "bad magic"});
  write_bytes(path("empty.npy"), "");
  expect_error([&] { sparq::io::read_npy_f32(path("empty.npy")); }, {"empty.npy", "bad magic"});
  write_bytes(path("short.npy"), bytes("\x93NUMPY\x01", 7));
  expect_error([&] { sparq::io::read_npy_f32(path("short.npy")); }, {"short.npy", "truncated"});
}

TEST_F(io_test, unsupported_version) {
  const bytes payload(4, '\0');
  write_bytes(path("v3.npy"), npy_file(dict_for("<f4", "(1,)"), payload, 3));
  expect_error([&] { sparq::io::read_npy_f32(path("v3.npy")); },
               {"v3.npy", "unsupported .npy format version 3.0", "1.0 and 2.0"});
  write_bytes(path("v11.npy"), npy_file(dict_for("<f4", "(1,)"), payload, 1, 1));
  expect_error([&] { sparq::io::read_npy_f32(path("v11.npy")); }, {"version 1.1"});
}

TEST_F(io_test, unsupported_dtype) {
  write_bytes(path("i4.npy"), npy_file(dict_for("<i4", "(2,)"), bytes(8, '\0')));
  expect_error([&] { sparq::io::read_npy_f32(path("i4.npy")); },
               {"i4.npy", "unsupported dtype '<i4'", "'<f2'", "'<f4'", "'<f8'"});
  write_bytes(path("be.npy"), npy_file(dict_for(">f4", "(2,)"), bytes(8, '\0')));
  expect_error([&] { sparq::io::read_npy_f32(path("be.npy")); }, {"unsupported dtype '>f4'"});
  write_bytes(path("st.npy"),
              npy_file("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }",
                       bytes(4, '\0')));
  expect_error([&] { sparq::io::read_npy_f32(path("st.npy")); }, {"st.npy", "structured"});
}

TEST_F(io_test, fortran_order_true) {
  write_bytes(path("f.npy"), npy_file(dict_for("<f4", "(2, 2)", "True"), bytes(16, '\0')));
  expect_error([&] { sparq::io::read_npy_f32(path("f.npy")); }, {"f.npy", "fortran_order"});
}

TEST_F(io_test, malformed_header_dict) {
  const bytes payload(8, '\0');
  const std::string bad_dicts[] = {
      "",                                                             // empty
      "{'descr': '<f4', 'fortran_order': False}",                     // no shape
      "{'descr': '<f4', 'shape': (2,)}",                              // no fortran_order
      "{'fortran_order': False, 'shape': (2,)}",                      // no descr
      "{'descr': '<f4', 'fortran_order': False, 'shape': (2,)",       // unterminated
      "{'descr': '<f4', 'fortran_order': Maybe, 'shape': (2,)}",      // bad literal
      "{'descr': '<f4', 'fortran_order': False, 'shape': (-2,)}",     // negative extent
      "{'descr': '<f4', 'fortran_order': False, 'shape': [2]}",       // list, not tuple
      "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}",  // extra key
      "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'oops}",  // unterminated str
      "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}",
      "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999,)}",
      "{'descr': '<f4', 'fortran_order': False, 'shape': (2,)} junk",
  };
  int i = 0;
  for (const std::string& d : bad_dicts) {
    const std::string name = "h" + std::to_string(i++) + ".npy";
    write_bytes(path(name), npy_file(d, payload));
    expect_error([&] { sparq::io::read_npy_f32(path(name)); }, {name, "malformed header"});
  }
  // Header length field larger than the file.
  bytes b = npy_file(dict_for("<f4", "(2,)"), payload);
  b[8] = '\xff';
  b[9] = '\x7f';
  write_bytes(path("hl.npy"), b);
  expect_error([&] { sparq::io::read_npy_f32(path("hl.npy")); }, {"hl.npy", "truncated header"});
  // Non-ASCII byte inside the header.
  bytes c = npy_file(dict_for("<f4", "(2,)"), payload);
  c[12] = '\xc3';
  write_bytes(path("na.npy"), c);
  expect_error([&] { sparq::io::read_npy_f32(path("na.npy")); }, {"na.npy", "non-ASCII"});
}

TEST_F(io_test, truncated_data) {
  bytes payload;
  for (int i = 0; i < 5; ++i) put_f32(payload, 1.0f);  // 20 of the 24 bytes a (2, 3) needs
  write_bytes(path("t.npy"), npy_file(dict_for("<f4", "(2, 3)"), payload));
  expect_error([&] { sparq::io::read_npy_f32(path("t.npy")); },
               {"t.npy", "truncated data", "expected 24 bytes", "found 20"});
  // Huge shape: the product overflows, or the file simply lacks the bytes; never allocates.
  write_bytes(path("big.npy"),
              npy_file(dict_for("<f8", "(4294967296, 4294967296, 16)"), payload));
  expect_error([&] { sparq::io::read_npy_f32(path("big.npy")); }, {"big.npy", "too large"});
  write_bytes(path("big2.npy"), npy_file(dict_for("<f8", "(1000000000,)"), payload));
  expect_error([&] { sparq::io::read_npy_f32(path("big2.npy")); },
               {"big2.npy", "expected 8000000000 bytes", "found 20"});
  // Trailing bytes after the data are reported too.
  payload += bytes(8, '\0');
  write_bytes(path("tr.npy"), npy_file(dict_for("<f4", "(2, 3)"), payload));
  expect_error([&] { sparq::io::read_npy_f32(path("tr.npy")); },
               {"tr.npy", "expected 24 bytes", "found 28", "trailing"});
}

TEST_F(io_test, shape_mismatch) {
  sparq::io::write_npy_f32(path("q.npy"), {8, 64}, std::vector<float>(8 * 64));
  expect_error([&] { sparq::io::read_npy_f32(path("q.npy"), {8, 32}); },
               {"q.npy", "shape mismatch", "(8, 64)", "(8, 32)"});
  expect_error([&] { sparq::io::read_npy_f32(path("q.npy"), {2, 8, 64}); },
               {"q.npy", "rank 2", "rank 3"});
  EXPECT_NO_THROW(sparq::io::read_npy_f32(path("q.npy"), {sparq::io::npy_any, 64}));
}

TEST_F(io_test, random_corruption_never_crashes) {
  // Flip/truncate bytes of a valid file; every outcome must be a value or a format_error.
  std::vector<float> v(6, 1.0f);
  sparq::io::write_npy_f32(path("ok.npy"), {2, 3}, v);
  std::ifstream f(path("ok.npy"), std::ios::binary);
  const bytes good((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::uint32_t rng = 12345;
  for (int trial = 0; trial < 2000; ++trial) {
    bytes b = good;
    rng = rng * 1664525u + 1013904223u;
    if (trial % 3 == 0) {
      b.resize(rng % (good.size() + 1));
    } else {
      const std::size_t pos = (rng >> 8) % 90;  // the preamble and header
      b[pos] = static_cast<char>(rng >> 24);
    }
    write_bytes(path("c.npy"), b);
    try {
      (void)sparq::io::read_npy_f32(path("c.npy"));
    } catch (const format_error&) {
    }
  }
}

// ---------------------------------------------------------------------------------------------
// JSON and manifest

TEST(json, parses_all_value_kinds_and_escapes) {
  using sparq::io::detail::parse_json;
  const auto v = parse_json(
      R"({"a": [1, -2.5e3, 0, true, false, null], "s": "x\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00",
          "o": {}, "e": []})",
      "doc");
  ASSERT_TRUE(v.is_object());
  const auto* a = v.find("a");
  ASSERT_TRUE(a && a->is_array());
  ASSERT_EQ(a->items.size(), 6u);
  EXPECT_EQ(a->items[1].number, -2500.0);
  EXPECT_TRUE(a->items[3].boolean);
  EXPECT_TRUE(a->items[5].is_null());
  EXPECT_EQ(v.find("s")->string, "x\"\\/\b\f\n\r\t\xc3\xa9\xf0\x9f\x98\x80");
  EXPECT_TRUE(v.find("o")->is_object());
  EXPECT_TRUE(v.find("e")->items.empty());
}

TEST(json, integers_keep_their_exact_value) {
  using sparq::io::detail::parse_json;
  // 2^53 + 1 has no double; the nearest double is 2^53.
  const auto v = parse_json(
      R"([9007199254740993, -9223372036854775808, 9223372036854775807, 0, -0, 42,
          9223372036854775808, -9223372036854775809, 1.0, 1e3, 2E+0, -7.5, "3", true, null])",
      "doc");
  ASSERT_TRUE(v.is_array());
  ASSERT_EQ(v.items.size(), 15u);
  const auto& it = v.items;
  EXPECT_TRUE(it[0].integral);
  EXPECT_EQ(it[0].integer, std::int64_t{9007199254740993});
  EXPECT_EQ(it[0].number, 9007199254740992.0);  // the double is still the rounded value
  EXPECT_TRUE(it[1].integral);
  EXPECT_EQ(it[1].integer, std::numeric_limits<std::int64_t>::min());
  EXPECT_TRUE(it[2].integral);
  EXPECT_EQ(it[2].integer, std::numeric_limits<std::int64_t>::max());
  EXPECT_TRUE(it[3].integral);
  EXPECT_EQ(it[3].integer, 0);
  EXPECT_TRUE(it[4].integral);
  EXPECT_EQ(it[4].integer, 0);
  EXPECT_TRUE(it[5].integral);
  EXPECT_EQ(it[5].integer, 42);
  EXPECT_EQ(it[5].number, 42.0);
  // Integers outside int64 are numbers, but only as doubles.
  for (std::size_t i : {6u, 7u}) {
    EXPECT_TRUE(it[i].is_number()) << i;
    EXPECT_FALSE(it[i].integral) << i;
    EXPECT_EQ(it[i].integer, 0) << i;
  }
  EXPECT_EQ(it[6].number, 9223372036854775808.0);
  EXPECT_EQ(it[7].number, -9223372036854775808.0);
  // A fraction or an exponent makes a number non-integral even when its value is whole.
  for (std::size_t i : {8u, 9u, 10u, 11u}) {
    EXPECT_TRUE(it[i].is_number()) << i;
    EXPECT_FALSE(it[i].integral) << i;
  }
  EXPECT_EQ(it[8].number, 1.0);
  EXPECT_EQ(it[9].number, 1000.0);
  EXPECT_EQ(it[10].number, 2.0);
  // Non-numbers are never integral.
  for (std::size_t i : {12u, 13u, 14u}) EXPECT_FALSE(it[i].integral) << i;
}

TEST(json, rejects_malformed_documents) {
  using sparq::io::detail::parse_json;
  const char* bad[] = {"",          "{",         "[1,]",       "{\"a\":1,}", "01",
                       "1.",        "-",         "tru",        "\"abc",      "\"\\x\"",
                       "{\"a\" 1}", "[1] [2]",   "\"\\ud800\"", "{\"a\":1,\"a\":2}",
                       "1e99999",   "\"a\nb\""};
  for (const char* s : bad) EXPECT_THROW(parse_json(s, "doc"), format_error) << s;
  // Deep nesting is an error, not a stack overflow.
  EXPECT_THROW(parse_json(std::string(100000, '['), "doc"), format_error);
  try {
    parse_json("{\n  \"a\": ?}", "m.json");
  } catch (const format_error& e) {
    EXPECT_NE(std::string(e.what()).find("m.json: invalid JSON at line 2, column 8"),
              std::string::npos)
        << e.what();
  }
}

namespace {

const char* small_manifest = R"({
  "set": "unit",
  "n_q_heads": 4, "n_kv_heads": 2, "head_dim": 8, "softmax_scale": 0.25,
  "layout": {"q": "ignored"},
  "traces": [
    {"id": "a", "dir": "dir_a", "layer": 3, "S": 5, "gqa_group": 2,
     "files": {"q": "q.npy", "K": "K.npy", "V": "V.npy", "o": "o.npy"}},
    {"id": "b", "S": 7, "n_q_heads": 6, "n_kv_heads": 3, "head_dim": 16,
     "softmax_scale": 0.5, "files": {"q": "qq.npy"}},
    {"id": "c", "S": 2, "n_q_heads": 5}
  ]
})";

/// Writes a consistent trace (q, K, V, dense o in float64) under dir/info.dir.
void write_trace_files(const fs::path& root, const sparq::io::trace_info& t) {
  fs::create_directories(root / t.dir);
  const std::size_t nq = t.n_q_heads, nkv = t.n_kv_heads, d = t.head_dim, S = t.S;
  std::vector<float> q(nq * d), K(nkv * S * d), V(nkv * S * d);
  for (std::size_t i = 0; i < q.size(); ++i) q[i] = static_cast<float>(std::cos(1.0 + double(i)));
  for (std::size_t i = 0; i < K.size(); ++i) K[i] = static_cast<float>(std::sin(0.3 * double(i)));
  for (std::size_t i = 0; i < V.size(); ++i) V[i] = static_cast<float>(std::cos(0.7 * double(i)));
  std::vector<double> o(nq * d, 0.0);
  for (std::size_t h = 0; h < nq; ++h) {
    const std::size_t j = h / (nq / nkv);
    std::vector<double> w(S);
    double mx = -1e300, z = 0;
    for (std::size_t s = 0; s < S; ++s) {
      double acc = 0;
      for (std::size_t i = 0; i < d; ++i) acc += double(q[h * d + i]) * K[(j * S + s) * d + i];
      w[s] = acc * t.softmax_scale;
      mx = std::max(mx, w[s]);
    }
    for (double& x : w) z += (x = std::exp(x - mx));
    for (std::size_t s = 0; s < S; ++s)
      for (std::size_t i = 0; i < d; ++i) o[h * d + i] += w[s] / z * V[(j * S + s) * d + i];
  }
  sparq::io::write_npy_f32((root / t.dir / t.q_file).string(), {nq, d}, q);
  sparq::io::write_npy_f32((root / t.dir / t.k_file).string(), {nkv, S, d}, K);
  sparq::io::write_npy_f32((root / t.dir / t.v_file).string(), {nkv, S, d}, V);
  sparq::io::write_npy_f64((root / t.dir / t.o_file).string(), {nq, d}, o);
}

}  // namespace

TEST_F(io_test, manifest_fields_and_global_fallbacks) {
  write_bytes(path("manifest.json"), small_manifest);
  const auto m = sparq::io::read_manifest(dir_.string());
  ASSERT_EQ(m.size(), 3u);

  EXPECT_EQ(m[0].id, "a");
  EXPECT_EQ(m[0].dir, "dir_a");
  EXPECT_EQ(m[0].layer, 3);
  EXPECT_EQ(m[0].S, 5u);
  EXPECT_EQ(m[0].n_q_heads, 4u);  // global
  EXPECT_EQ(m[0].n_kv_heads, 2u);
  EXPECT_EQ(m[0].head_dim, 8u);
  EXPECT_EQ(m[0].gqa_group, 2u);
  EXPECT_EQ(m[0].softmax_scale, 0.25f);
  EXPECT_EQ(m[0].k_file, "K.npy");

  EXPECT_EQ(m[1].dir, "b");  // defaults to id
  EXPECT_EQ(m[1].layer, -1);
  EXPECT_EQ(m[1].n_q_heads, 6u);
  EXPECT_EQ(m[1].n_kv_heads, 3u);
  EXPECT_EQ(m[1].head_dim, 16u);
  EXPECT_EQ(m[1].gqa_group, 2u);  // derived
  EXPECT_EQ(m[1].softmax_scale, 0.5f);
  EXPECT_EQ(m[1].q_file, "qq.npy");
  EXPECT_EQ(m[1].o_file, "o.npy");  // default name

  EXPECT_EQ(m[2].n_q_heads, 5u);
  EXPECT_EQ(m[2].gqa_group, 0u);  // 5 / 2 does not divide: load_trace reports it

  // Without a global softmax_scale the default is 1/sqrt(head_dim).
  write_bytes(path("manifest.json"),
              R"({"traces": [{"id": "x", "S": 3, "n_q_heads": 2, "n_kv_heads": 1,
                  "head_dim": 16}]})");
  const auto m2 = sparq::io::read_manifest(dir_.string());
  ASSERT_EQ(m2.size(), 1u);
  EXPECT_EQ(m2[0].softmax_scale, 0.25f);
  EXPECT_EQ(m2[0].gqa_group, 2u);
}

TEST_F(io_test, manifest_errors) {
  expect_error([&] { sparq::io::read_manifest(dir_.string()); },
               {"manifest.json", "manifest not found"});
  const std::pair<const char*, std::vector<std::string>> cases[] = {
      {"[1, 2]", {"top level must be an object"}},
      {"{\"n_q_heads\": 8}", {"no \"traces\" array"}},
      {"{\"traces\": {}}", {"\"traces\" must be an array"}},
      {"{\"traces\": [3]}", {"trace #0", "must be an object"}},
      {"{\"traces\": [{\"S\": 4}]}", {"trace #0", "\"id\" is missing"}},
      {"{\"n_q_heads\":1,\"n_kv_heads\":1,\"head_dim\":4,\"traces\":[{\"id\":\"z\"}]}",
       {"trace #0 ('z')", "\"S\" is missing"}},
      {"{\"n_q_heads\":1,\"n_kv_heads\":1,\"head_dim\":4,\"traces\":[{\"id\":\"z\",\"S\":-1}]}",
       {"'z'", "\"S\" must be a non-negative integer"}},
      {"{\"n_q_heads\":1,\"n_kv_heads\":1,\"head_dim\":4,\"traces\":[{\"id\":\"z\",\"S\":2.5}]}",
       {"\"S\" must be a non-negative integer"}},
      {"{\"n_q_heads\":\"8\",\"n_kv_heads\":1,\"head_dim\":4,\"traces\":[{\"id\":\"z\",\"S\":2}]}",
       {"\"n_q_heads\" must be a non-negative integer, found a string"}},
      {"{\"n_q_heads\":1,\"n_kv_heads\":1,\"head_dim\":4,\"softmax_scale\":-1,"
       "\"traces\":[{\"id\":\"z\",\"S\":2}]}",
       {"softmax_scale"}},
      {"{\"n_q_heads\":1,\"n_kv_heads\":1,\"head_dim\":4,"
       "\"traces\":[{\"id\":\"z\",\"S\":2,\"files\":{\"K\":7}}]}",
       {"files.K", "must be a string"}},
      {"{\"n_q_heads\":1,\"n_kv_heads\":1,\"head_dim\":4,"
       "\"traces\":[{\"id\":\"z\",\"S\":2},{\"id\":\"z\",\"S\":3}]}",
       {"duplicate trace id 'z'"}},
      {"{\"traces\": [", {"invalid JSON", "line 1"}},
  };
  for (const auto& [text, parts] : cases) {
    write_bytes(path("manifest.json"), text);
    try {
      sparq::io::read_manifest(dir_.string());
      ADD_FAILURE() << "no error for " << text;
    } catch (const format_error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("manifest.json"), std::string::npos) << msg;
      for (const std::string& p : parts)
        EXPECT_NE(msg.find(p), std::string::npos) << "lacks \"" << p << "\": " << msg;
    }
  }
}

TEST_F(io_test, corrupted_manifest_never_crashes) {
  const std::string good = small_manifest;
  std::uint32_t rng = 777;
  for (int trial = 0; trial < 3000; ++trial) {
    std::string text = good;
    rng = rng * 1664525u + 1013904223u;
    if (trial % 4 == 0)
      text.resize(rng % (good.size() + 1));
    else
      text[(rng >> 8) % good.size()] = static_cast<char>(rng >> 24);
    write_bytes(path("manifest.json"), text);
    try {
      (void)sparq::io::read_manifest(dir_.string());
    } catch (const format_error&) {
    }
  }
}

// ---------------------------------------------------------------------------------------------
// load_trace

TEST_F(io_test, load_trace_synthetic_and_every_validation_error) {
  write_bytes(path("manifest.json"), small_manifest);
  const auto m = sparq::io::read_manifest(dir_.string());
  write_trace_files(dir_, m[0]);
  write_trace_files(dir_, m[1]);

  const auto t = sparq::io::load_trace(dir_.string(), m[0]);
  EXPECT_EQ(t.q.size(), 4u * 8u);
  EXPECT_EQ(t.K.size(), 2u * 5u * 8u);
  EXPECT_EQ(t.o.size(), 4u * 8u);
  EXPECT_EQ(t.kv_head_of(3), 1u);
  EXPECT_EQ(t.k_row(1, 2), t.K.data() + (1 * 5 + 2) * 8);
  const auto t1 = sparq::io::load_trace(dir_.string(), m[1]);
  EXPECT_EQ(t1.info.q_file, "qq.npy");

  // n_q_heads not a multiple of n_kv_heads (record "c": 5 query heads, 2 KV heads).
  expect_error([&] { sparq::io::load_trace(dir_.string(), m[2]); },
               {"trace 'c'", "manifest.json", "n_q_heads (5) is not a multiple of n_kv_heads (2)"});
  auto info = m[0];
  info.gqa_group = 4;
  expect_error([&] { sparq::io::load_trace(dir_.string(), info); },
               {"trace 'a'", "gqa_group (4) != n_q_heads / n_kv_heads"});
  info = m[0];
  info.S = 0;
  expect_error([&] { sparq::io::load_trace(dir_.string(), info); }, {"trace 'a'", "S must be > 0"});
  info = m[0];
  info.head_dim = 0;
  expect_error([&] { sparq::io::load_trace(dir_.string(), info); },
               {"trace 'a'", "head_dim must be > 0"});
  info = m[0];
  info.n_kv_heads = 0;
  expect_error([&] { sparq::io::load_trace(dir_.string(), info); },
               {"trace 'a'", "n_kv_heads must be > 0"});

  // Shape mismatches against the manifest: S differs, head_dim differs.
  info = m[0];
  info.S = 6;
  expect_error([&] { sparq::io::load_trace(dir_.string(), info); },
               {"trace 'a'", "K.npy", "shape mismatch", "(2, 5, 8)", "(2, 6, 8)",
                "[n_kv_heads, S, head_dim]"});
  info = m[0];
  info.n_q_heads = 2;
  info.n_kv_heads = 1;
  expect_error([&] { sparq::io::load_trace(dir_.string(), info); },
               {"trace 'a'", "q.npy", "(4, 8)", "(2, 8)", "[n_q_heads, head_dim]"});

  // A missing file and a truncated file, named with the trace id.
  fs::remove(dir_ / "dir_a" / "V.npy");
  expect_error([&] { sparq::io::load_trace(dir_.string(), m[0]); },
               {"trace 'a'", "V.npy", "not found"});
  write_bytes((dir_ / "dir_a" / "V.npy").string(),
              npy_file(dict_for("<f4", "(2, 5, 8)"), bytes(10, '\0')));
  expect_error([&] { sparq::io::load_trace(dir_.string(), m[0]); },
               {"trace 'a'", "V.npy", "truncated data", "expected 320 bytes", "found 10"});

  // A V with the right shape but a NaN.
  std::vector<float> v(2 * 5 * 8, 0.5f);
  v[1 * 40 + 3 * 8 + 2] = std::numeric_limits<float>::quiet_NaN();
  sparq::io::write_npy_f32((dir_ / "dir_a" / "V.npy").string(), {2, 5, 8}, v);
  expect_error([&] { sparq::io::load_trace(dir_.string(), m[0]); },
               {"trace 'a'", "V.npy", "non-finite", "[1, 3, 2]"});
}

// ---------------------------------------------------------------------------------------------
// Real traces (tests/data/traces: 3 of the dev traces)

TEST(io_real, loads_real_traces_and_matches_oracle) {
  const std::string dir = data_dir();
  const auto m = sparq::io::read_manifest(dir);
  ASSERT_EQ(m.size(), 3u);
  for (const auto& info : m) {
    SCOPED_TRACE(info.id);
    EXPECT_EQ(info.n_q_heads, 8u);
    EXPECT_EQ(info.n_kv_heads, 2u);
    EXPECT_EQ(info.head_dim, 64u);
    EXPECT_EQ(info.gqa_group, 4u);
    EXPECT_EQ(info.softmax_scale, 0.125f);
    const auto t = sparq::io::load_trace(dir, info);
    const std::size_t d = info.head_dim, S = info.S;
    ASSERT_EQ(t.K.size(), 2 * S * d);

    // Dense attention in float64 from the float32 inputs reproduces o.npy.
    double err2 = 0, ref2 = 0;
    for (std::size_t h = 0; h < info.n_q_heads; ++h) {
      const std::size_t j = t.kv_head_of(h);
      std::vector<double> w(S);
      double mx = -1e300, z = 0;
      for (std::size_t s = 0; s < S; ++s) {
        double acc = 0;
        for (std::size_t i = 0; i < d; ++i) acc += double(t.q_head(h)[i]) * t.k_row(j, s)[i];
        w[s] = acc * info.softmax_scale;
        mx = std::max(mx, w[s]);
      }
      for (double& x : w) z += (x = std::exp(x - mx));
      for (std::size_t i = 0; i < d; ++i) {
        double y = 0;
        for (std::size_t s = 0; s < S; ++s) y += w[s] * t.v_row(j, s)[i];
        y /= z;
        err2 += (y - t.o_head(h)[i]) * (y - t.o_head(h)[i]);
        ref2 += t.o_head(h)[i] * t.o_head(h)[i];
      }
    }
    EXPECT_LT(std::sqrt(err2 / ref2), 1e-12);
  }
  const bool has_l2 = std::any_of(m.begin(), m.end(), [](const auto& i) { return i.layer == 2; });
  EXPECT_TRUE(has_l2);
}
