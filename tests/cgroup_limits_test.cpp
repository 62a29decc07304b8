// The host's limits (cpu/cgroup_limits.h): the default thread count's cgroup CPU quota and the
// memory limit, on fake /proc and /sys/fs/cgroup trees in a temporary directory (cgroup v2 cpu.max
// and memory.max, v1 cfs quota and period and memory.limit_in_bytes, ancestors' limits, a
// container's own cgroup at the mount root, missing and malformed files); the memory ceiling the
// large buffers are checked against.
#include "cpu/cgroup_limits.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/sysinfo.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "cpu/aligned_buffer.h"
#include "cpu/thread_pool.h"

namespace sampleattn::cpu {
namespace {

class CgroupQuota : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/sampleattn_cgroup_XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    root_ = pattern;
    std::filesystem::create_directories(proc() + "/self");
    std::filesystem::create_directories(cgroup());
  }
  void TearDown() override { std::filesystem::remove_all(root_); }

  std::string proc() const { return root_ + "/proc"; }
  std::string cgroup() const { return root_ + "/sys/fs/cgroup"; }
  // Writes text to path (relative to the fake root), making its directories.
  void write(const std::string& path, const std::string& text) const {
    const std::filesystem::path full = root_ + "/" + path;
    std::filesystem::create_directories(full.parent_path());
    std::ofstream(full) << text;
  }
  int limit() const { return cgroup_cpu_limit(proc(), cgroup()); }
  int64_t memory_limit() const { return cgroup_memory_limit(proc(), cgroup()); }

  std::string root_;
};

TEST_F(CgroupQuota, V2MaxIsNoLimit) {
  write("proc/self/cgroup", "0::/app.slice/job\n");
  write("sys/fs/cgroup/app.slice/job/cpu.max", "max 100000\n");
  EXPECT_EQ(limit(), 0);
}

TEST_F(CgroupQuota, V2QuotaRoundsUp) {
  write("proc/self/cgroup", "0::/job\n");
  write("sys/fs/cgroup/job/cpu.max", "150000 100000\n");
  EXPECT_EQ(limit(), 2);
  write("sys/fs/cgroup/job/cpu.max", "50000 100000\n");
  EXPECT_EQ(limit(), 1);
  write("sys/fs/cgroup/job/cpu.max", "400000 100000\n");
  EXPECT_EQ(limit(), 4);
}

TEST_F(CgroupQuota, V2TightestAncestorWins) {
  write("proc/self/cgroup", "0::/a/b/c\n");
  write("sys/fs/cgroup/a/cpu.max", "300000 100000\n");
  write("sys/fs/cgroup/a/b/cpu.max", "max 100000\n");
  write("sys/fs/cgroup/a/b/c/cpu.max", "800000 100000\n");
  EXPECT_EQ(limit(), 3);
  write("sys/fs/cgroup/a/b/c/cpu.max", "120000 100000\n");
  EXPECT_EQ(limit(), 2);
}

TEST_F(CgroupQuota, ContainerSeesItsOwnCgroupAtTheRoot) {
  // Without a cgroup namespace the path names the host's hierarchy, absent in the container.
  write("proc/self/cgroup", "0::/system.slice/docker-1234.scope\n");
  write("sys/fs/cgroup/cpu.max", "200000 100000\n");
  EXPECT_EQ(limit(), 2);
}

TEST_F(CgroupQuota, V1QuotaOverPeriod) {
  write("proc/self/cgroup", "5:memory:/docker/x\n4:cpu,cpuacct:/docker/x\n0::/\n");
  write("sys/fs/cgroup/cpu,cpuacct/docker/x/cpu.cfs_quota_us", "250000\n");
  write("sys/fs/cgroup/cpu,cpuacct/docker/x/cpu.cfs_period_us", "100000\n");
  EXPECT_EQ(limit(), 3);
  write("sys/fs/cgroup/cpu,cpuacct/docker/x/cpu.cfs_quota_us", "-1\n");
  EXPECT_EQ(limit(), 0);
  write("sys/fs/cgroup/cpu,cpuacct/docker/cpu.cfs_quota_us", "100000\n");
  write("sys/fs/cgroup/cpu,cpuacct/docker/cpu.cfs_period_us", "100000\n");
  EXPECT_EQ(limit(), 1) << "a parent's quota applies too";
}

TEST_F(CgroupQuota, V1CpuControllerMountedAlone) {
  write("proc/self/cgroup", "3:cpu:/job\n");
  write("sys/fs/cgroup/cpu/job/cpu.cfs_quota_us", "60000\n");
  write("sys/fs/cgroup/cpu/job/cpu.cfs_period_us", "20000\n");
  EXPECT_EQ(limit(), 3);
}

TEST_F(CgroupQuota, MissingOrMalformedFilesAreNoLimit) {
  EXPECT_EQ(limit(), 0) << "no /proc/self/cgroup";
  write("proc/self/cgroup", "0::/job\n");
  EXPECT_EQ(limit(), 0) << "no cpu.max";
  write("sys/fs/cgroup/job/cpu.max", "lots 100000\n");
  EXPECT_EQ(limit(), 0);
  write("sys/fs/cgroup/job/cpu.max", "100000 0\n");
  EXPECT_EQ(limit(), 0);
  write("sys/fs/cgroup/job/cpu.max", "");
  EXPECT_EQ(limit(), 0);
  write("proc/self/cgroup", "4:cpu,cpuacct:/job\n");
  write("sys/fs/cgroup/cpu,cpuacct/job/cpu.cfs_quota_us", "100000\n");
  EXPECT_EQ(limit(), 0) << "a quota without its period";
  write("proc/self/cgroup", "garbage\n");
  EXPECT_EQ(limit(), 0);
}

TEST_F(CgroupQuota, PathsCannotLeaveTheMount) {
  write("proc/self/cgroup", "0::/../../etc\n");
  write("sys/fs/cgroup/cpu.max", "200000 100000\n");
  write("sys/fs/cpu.max", "100000 100000\n");
  EXPECT_EQ(limit(), 2);
}

TEST_F(CgroupQuota, DefaultPoolHonoursTheQuota) {
  // The real files: whatever this machine's quota, the default pool keeps within it.
  const char* saved = std::getenv("SAMPLEATTN_NUM_THREADS");
  const std::string saved_value = saved != nullptr ? saved : "";
  unsetenv("SAMPLEATTN_NUM_THREADS");
  std::unique_ptr<ThreadPool> pool;
  Status status = ThreadPool::create(ThreadPoolOptions{}, &pool);
  if (saved != nullptr) setenv("SAMPLEATTN_NUM_THREADS", saved_value.c_str(), 1);
  ASSERT_TRUE(status.is_ok()) << status.message();
  const int quota_cpus = cgroup_cpu_limit();
  if (quota_cpus > 0) {
    EXPECT_LE(pool->num_threads(), quota_cpus);
  }
  EXPECT_GE(pool->num_threads(), 1);
}

constexpr int64_t kGiB = int64_t{1} << 30;

TEST_F(CgroupQuota, V2MemoryMaxTightestAncestorWins) {
  write("proc/self/cgroup", "0::/a/b\n");
  write("sys/fs/cgroup/a/b/memory.max", "max\n");
  EXPECT_EQ(memory_limit(), 0);
  write("sys/fs/cgroup/a/memory.max", "8589934592\n");
  EXPECT_EQ(memory_limit(), 8 * kGiB) << "a parent's limit applies too";
  write("sys/fs/cgroup/a/b/memory.max", "2147483648\n");
  EXPECT_EQ(memory_limit(), 2 * kGiB);
  EXPECT_EQ(limit(), 0) << "memory files say nothing about the CPU";
}

TEST_F(CgroupQuota, V2MemoryOfAContainerAtTheRoot) {
  write("proc/self/cgroup", "0::/system.slice/docker-1234.scope\n");
  write("sys/fs/cgroup/memory.max", "4294967296\n");
  EXPECT_EQ(memory_limit(), 4 * kGiB);
}

TEST_F(CgroupQuota, V1MemoryLimitInBytes) {
  write("proc/self/cgroup", "5:memory:/docker/x\n4:cpu,cpuacct:/docker/x\n0::/\n");
  write("sys/fs/cgroup/memory/docker/x/memory.limit_in_bytes", "9223372036854771712\n");
  EXPECT_EQ(memory_limit(), 0) << "v1 writes no limit as the largest page multiple";
  write("sys/fs/cgroup/memory/docker/memory.limit_in_bytes", "1073741824\n");
  EXPECT_EQ(memory_limit(), kGiB);
  write("sys/fs/cgroup/cpu,cpuacct/docker/x/memory.limit_in_bytes", "1024\n");
  EXPECT_EQ(memory_limit(), kGiB) << "only the memory controller's hierarchy counts";
}

TEST_F(CgroupQuota, MalformedMemoryFilesAreNoLimit) {
  write("proc/self/cgroup", "0::/job\n");
  EXPECT_EQ(memory_limit(), 0) << "no memory.max";
  for (const char* text : {"", "lots\n", "-5\n", "0\n", "12 34\n"}) {
    write("sys/fs/cgroup/job/memory.max", text);
    EXPECT_EQ(memory_limit(), 0) << "'" << text << "'";
  }
}

TEST(MemoryCeiling, IsTheMachineOrTheCgroupAndRefusesWhatNeverFits) {
  struct sysinfo info {};
  ASSERT_EQ(sysinfo(&info), 0);
  const uint64_t machine = (static_cast<uint64_t>(info.totalram) + info.totalswap) * (info.mem_unit ? info.mem_unit : 1);
  const int64_t ceiling = memory_ceiling();
  ASSERT_GT(ceiling, 0);
  EXPECT_LE(static_cast<uint64_t>(ceiling), machine);
  const int64_t cgroup = cgroup_memory_limit();
  EXPECT_EQ(ceiling, cgroup > 0 && static_cast<uint64_t>(cgroup) < machine ? cgroup : static_cast<int64_t>(machine));
  EXPECT_TRUE(fits_memory_ceiling(static_cast<uint64_t>(ceiling)));
  EXPECT_FALSE(fits_memory_ceiling(static_cast<uint64_t>(ceiling) + 1));
  // The CPU backend's buffers: refused past the ceiling without asking the allocator (on a host
  // that overcommits it would say yes), granted under it.
  EXPECT_EQ(allocate_aligned(static_cast<size_t>(ceiling) + 4096), nullptr);
  EXPECT_NE(allocate_aligned(1 << 20), nullptr);
}

}  // namespace
}  // namespace sampleattn::cpu
