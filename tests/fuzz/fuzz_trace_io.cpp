// libFuzzer target: the .npy reader and the manifest reader on arbitrary bytes. Contract: a
// malformed file raises sparq::io::format_error; nothing else escapes, nothing crashes.
#include <sparq/io/npy.hpp>
#include <sparq/io/trace.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <unistd.h>

namespace {
std::string scratch_dir() {
  static const std::string dir = [] {
    auto p = std::filesystem::temp_directory_path() / ("sparq_fuzz_io_" + std::to_string(getpid()));
    std::filesystem::create_directories(p);
    return p.string();
  }();
  return dir;
}
void write_file(const std::string& path, const std::uint8_t* data, std::size_t size) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string dir = scratch_dir();
  // First byte picks the reader; the rest is the file.
  if (data[0] & 1) {
    const std::string path = dir + "/x.npy";
    write_file(path, data + 1, size - 1);
    try {
      (void)sparq::io::read_npy_f32(path);
    } catch (const sparq::io::format_error&) {
    }
    try {
      (void)sparq::io::read_npy_f64(path);
    } catch (const sparq::io::format_error&) {
    }
  } else {
    write_file(dir + "/manifest.json", data + 1, size - 1);
    try {
      for (const auto& info : sparq::io::read_manifest(dir)) {
        try {
          (void)sparq::io::load_trace(dir, info);
        } catch (const sparq::io::format_error&) {
        }
      }
    } catch (const sparq::io::format_error&) {
    }
  }
  return 0;
}
