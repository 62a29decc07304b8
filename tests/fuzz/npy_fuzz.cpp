// libFuzzer target: the .npy reader on arbitrary bytes. Any input must give a status (or a
// tensor whose byte count matches its shape), never a crash, a sanitizer report or an allocation
// larger than the file can fill. Seeds: tests/data/npy and tests/fuzz/corpus/npy.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "workload/npy.h"

namespace {

const std::string& scratch_path() {
  static const std::string path = [] {
    const char* dir = std::getenv("TMPDIR");
    return std::string(dir && *dir ? dir : "/tmp") + "/sampleattn_npy_fuzz_" + std::to_string(::getpid()) + ".npy";
  }();
  return path;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sampleattn::workload;
  // The header parser on the raw bytes.
  NpyHeader header;
  (void)parse_npy_header(data, static_cast<int64_t>(size), &header);

  // The file reader on the same bytes as a file.
  std::FILE* f = std::fopen(scratch_path().c_str(), "wb");
  if (f == nullptr) return 0;
  if (size > 0) std::fwrite(data, 1, size, f);
  std::fclose(f);
  Tensor3 t;
  const sampleattn::Status s = read_npy(scratch_path(), &t);
  if (s.is_ok()) {
    const int64_t expected = t.num_elements() * sampleattn::dtype_size(t.dtype);
    if (static_cast<int64_t>(t.bytes.size()) != expected || expected > static_cast<int64_t>(size)) __builtin_trap();
    // What was read writes back and reads again to the same tensor.
    if (write_npy(scratch_path(), t).is_ok()) {
      Tensor3 back;
      if (!read_npy(scratch_path(), &back).is_ok() || back.bytes != t.bytes || back.seq != t.seq ||
          back.heads != t.heads || back.dim != t.dim || back.dtype != t.dtype) {
        __builtin_trap();
      }
    }
  } else if (s.message().empty()) {
    __builtin_trap();
  }
  std::remove(scratch_path().c_str());
  return 0;
}
