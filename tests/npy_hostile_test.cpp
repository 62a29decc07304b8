// Hostile .npy files (tests/data/npy) and failing writes: every one gets a status and a message,
// never a crash, an out-of-bounds access (the suite runs under ASan in CI) or an allocation sized
// from the header alone.
#include <gtest/gtest.h>

#include <sys/resource.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "workload/npy.h"

namespace sampleattn::workload {
namespace {

namespace fs = std::filesystem;

const fs::path kDataDir = fs::path(SAMPLEATTN_TEST_DATA_DIR) / "npy";

struct HostileFile {
  const char* name;
  sampleattn_status status;
  const char* message_part;
};

// One entry per file; what each was made to break is in tests/data/npy/README.md.
const HostileFile kHostile[] = {
    {"header_len0.npy", SAMPLEATTN_INVALID_ARGUMENT, "descr"},
    {"header_len1.npy", SAMPLEATTN_INVALID_ARGUMENT, "descr"},
    {"huge_shape.npy", SAMPLEATTN_INVALID_ARGUMENT, "truncated"},
    {"short_1gib.npy", SAMPLEATTN_INVALID_ARGUMENT, "needs 1073741824 bytes"},
    {"header_past_end.npy", SAMPLEATTN_INVALID_ARGUMENT, "truncated header"},
    {"header_4gib.npy", SAMPLEATTN_INVALID_ARGUMENT, "implausible"},
    {"shape_overflow.npy", SAMPLEATTN_INVALID_ARGUMENT, "too large"},
    {"magic_only.npy", SAMPLEATTN_INVALID_ARGUMENT, "magic"},
};

TEST(NpyHostile, EveryFileFailsWithAClearStatus) {
  for (const HostileFile& c : kHostile) {
    SCOPED_TRACE(c.name);
    const fs::path path = kDataDir / c.name;
    ASSERT_TRUE(fs::exists(path)) << path;
    Tensor3 t;
    t.seq = 7;  // a failed read leaves the output as it was
    const Status s = read_npy(path.string(), &t);
    EXPECT_EQ(s.code(), c.status) << s.message();
    EXPECT_NE(s.message().find(c.message_part), std::string::npos) << s.message();
    EXPECT_NE(s.message().find(c.name), std::string::npos) << "the message names the file: " << s.message();
    EXPECT_EQ(t.seq, 7);
  }
}

// Every file in the folder is listed above, so a new regression file cannot be forgotten.
TEST(NpyHostile, EveryDataFileIsCovered) {
  for (const auto& entry : fs::directory_iterator(kDataDir)) {
    if (entry.path().extension() != ".npy") continue;
    bool listed = false;
    for (const HostileFile& c : kHostile) listed |= entry.path().filename() == c.name;
    EXPECT_TRUE(listed) << entry.path();
  }
}

Tensor3 small_tensor(float value) {
  Tensor3 t;
  EXPECT_TRUE(tensor_from_f32(2, 1, 4, DType::kF32, std::vector<float>(8, value), &t).is_ok());
  return t;
}

// A write that fails part way (here: the file size limit, as a full disk or quota would) leaves
// the previous file intact and no temporary file behind.
TEST(NpyWrite, FailedWriteKeepsThePreviousFile) {
  const fs::path dir = fs::temp_directory_path() / ("sampleattn_npy_write_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const fs::path path = dir / "o.npy";
  ASSERT_TRUE(write_npy(path.string(), small_tensor(1.f)).is_ok());

  Tensor3 big;
  ASSERT_TRUE(make_tensor(64, 8, 128, DType::kF32, &big).is_ok());  // 256 KiB
  rlimit old{};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old), 0);
  const auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  rlimit small = old;
  small.rlim_cur = 4096;
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
  const Status s = write_npy(path.string(), big);
  ::setrlimit(RLIMIT_FSIZE, &old);
  std::signal(SIGXFSZ, old_handler);
  EXPECT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("cannot write"), std::string::npos) << s.message();

  Tensor3 back;
  ASSERT_TRUE(read_npy(path.string(), &back).is_ok());
  EXPECT_EQ(back.seq, 2);
  EXPECT_EQ(back.at(1, 0, 3), 1.f);
  int files = 0;
  for (const auto& entry : fs::directory_iterator(dir)) files += entry.is_regular_file() ? 1 : 0;
  EXPECT_EQ(files, 1) << "a temporary file was left behind";
  fs::remove_all(dir);
}

TEST(NpyWrite, ReplacesAnExistingFile) {
  const fs::path path = fs::temp_directory_path() / ("sampleattn_npy_replace_" + std::to_string(::getpid()) + ".npy");
  ASSERT_TRUE(write_npy(path.string(), small_tensor(1.f)).is_ok());
  ASSERT_TRUE(write_npy(path.string(), small_tensor(2.f)).is_ok());
  Tensor3 back;
  ASSERT_TRUE(read_npy(path.string(), &back).is_ok());
  EXPECT_EQ(back.at(0, 0, 0), 2.f);
  fs::remove(path);
}

TEST(NpyMemory, AllocationFailureIsAStatus) {
  // 2^40 f32 elements (4 TiB): valid arithmetic, past any test machine's RAM and swap, so refused
  // before it is asked for (a host that overcommits would grant it, then kill the zero-filling
  // process; AddressSanitizer would report the impossible operator new).
  Tensor3 t;
  const Status s = make_tensor(int64_t{1} << 20, 1024, 1024, DType::kF32, &t);
  EXPECT_EQ(s.code(), SAMPLEATTN_OUT_OF_MEMORY) << s.message();
  EXPECT_TRUE(t.bytes.empty());
}

// Bytes of address space the process holds now (VmSize), or -1.
int64_t address_space_bytes() {
  std::ifstream status("/proc/self/status");
  std::string key;
  while (status >> key) {
    if (key == "VmSize:") {
      int64_t kib = 0;
      status >> kib;
      return kib * 1024;
    }
    std::getline(status, key);
  }
  return -1;
}

// A 128-byte file that claims 1 GiB must fail before anything near 1 GiB is allocated: with the
// address space capped at 256 MiB above what the process holds, the read still fails cleanly.
TEST(NpyMemory, ShortFileAllocatesNoMoreThanItHolds) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "sanitizers reserve address space of their own";
#endif
  const int64_t now = address_space_bytes();
  if (now < 0) GTEST_SKIP() << "no /proc/self/status";
  rlimit old{};
  ASSERT_EQ(::getrlimit(RLIMIT_AS, &old), 0);
  rlimit capped = old;
  capped.rlim_cur = static_cast<rlim_t>(now + (int64_t{256} << 20));
  ASSERT_EQ(::setrlimit(RLIMIT_AS, &capped), 0);
  Tensor3 t;
  Status s;
  bool threw = false;
  try {
    s = read_npy((kDataDir / "short_1gib.npy").string(), &t);
  } catch (...) {
    threw = true;
  }
  ::setrlimit(RLIMIT_AS, &old);
  EXPECT_FALSE(threw);
  EXPECT_EQ(s.code(), SAMPLEATTN_INVALID_ARGUMENT) << s.message();
  EXPECT_NE(s.message().find("truncated"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace sampleattn::workload
