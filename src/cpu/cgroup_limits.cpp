// cgroup CPU and memory limits and the memory ceiling (see cgroup_limits.h). Only plain file reads
// and sysinfo: no exceptions leave. The CPU limit is not cached (a thread pool asks once, when it
// is created); the memory ceiling is read once per process.
#include "cpu/cgroup_limits.h"

#include <sys/sysinfo.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

namespace sampleattn::cpu {
namespace {

// The first line of a file, or false when it cannot be read.
bool read_first_line(const std::string& path, std::string* line) {
  std::ifstream file(path);
  if (!file) return false;
  return static_cast<bool>(std::getline(file, *line));
}

// A whole decimal number filling the token, else false.
bool parse_int64(const std::string& token, int64_t* value) {
  if (token.empty()) return false;
  errno = 0;
  char* end = nullptr;
  const long long parsed = std::strtoll(token.c_str(), &end, 10);
  if (errno != 0 || end != token.c_str() + token.size()) return false;
  *value = parsed;
  return true;
}

// ceil(quota / period) as an int, for a positive quota and period; 0 otherwise (no limit).
int cpus_of(int64_t quota, int64_t period) {
  if (quota <= 0 || period <= 0) return 0;
  const int64_t cpus = quota / period + (quota % period != 0 ? 1 : 0);
  return static_cast<int>(std::min<int64_t>(cpus, std::numeric_limits<int>::max()));
}

// cgroup v2: "max PERIOD" or "QUOTA PERIOD".
int v2_limit(const std::string& directory) {
  std::string line;
  if (!read_first_line(directory + "/cpu.max", &line)) return 0;
  std::istringstream fields(line);
  std::string quota_text, period_text;
  fields >> quota_text >> period_text;
  int64_t quota = 0, period = 0;
  if (quota_text == "max" || !parse_int64(quota_text, &quota) || !parse_int64(period_text, &period)) return 0;
  return cpus_of(quota, period);
}

// cgroup v1: cpu.cfs_quota_us ("-1" = no limit) over cpu.cfs_period_us.
int v1_limit(const std::string& directory) {
  std::string quota_text, period_text;
  if (!read_first_line(directory + "/cpu.cfs_quota_us", &quota_text) ||
      !read_first_line(directory + "/cpu.cfs_period_us", &period_text)) {
    return 0;
  }
  int64_t quota = 0, period = 0;
  if (!parse_int64(quota_text, &quota) || !parse_int64(period_text, &period)) return 0;
  return cpus_of(quota, period);
}

// Memory limits: bytes, 0 for none. v1 writes "no limit" as about 2^63 rounded to pages.
int64_t memory_bytes_of(const std::string& text) {
  int64_t bytes = 0;
  if (!parse_int64(text, &bytes) || bytes <= 0 || bytes >= (int64_t{1} << 60)) return 0;
  return bytes;
}

// cgroup v2: memory.max, "max" or bytes.
int64_t v2_memory_limit(const std::string& directory) {
  std::string line;
  if (!read_first_line(directory + "/memory.max", &line)) return 0;
  return memory_bytes_of(line);
}

// cgroup v1: memory.limit_in_bytes.
int64_t v1_memory_limit(const std::string& directory) {
  std::string line;
  if (!read_first_line(directory + "/memory.limit_in_bytes", &line)) return 0;
  return memory_bytes_of(line);
}

// The components of a cgroup path ("/a/b" -> {"a", "b"}); empty for the root or for a path
// that would leave the mount ("..").
std::vector<std::string> path_components(const std::string& path) {
  std::vector<std::string> parts;
  std::istringstream stream(path);
  for (std::string part; std::getline(stream, part, '/');) {
    if (part.empty() || part == ".") continue;
    if (part == "..") return {};
    parts.push_back(part);
  }
  return parts;
}

// The least of two limits where 0 means none.
int64_t tighter(int64_t a, int64_t b) { return a > 0 && (b == 0 || a < b) ? a : b; }

// The tightest limit in mount/path and each of its ancestors up to mount itself.
template <typename Limit>
int64_t tightest_on_path(const std::string& mount, const std::string& path, Limit limit_of) {
  std::vector<std::string> parts = path_components(path);
  int64_t tightest = 0;
  for (;;) {
    std::string directory = mount;
    for (const std::string& part : parts) directory += "/" + part;
    tightest = tighter(limit_of(directory), tightest);
    if (parts.empty()) return tightest;
    parts.pop_back();
  }
}

bool has_controller(const std::string& controllers, const std::string& name) {
  std::istringstream stream(controllers);
  for (std::string controller; std::getline(stream, controller, ',');) {
    if (controller == name) return true;
  }
  return false;
}

// The tightest limit of a controller over the process's cgroups (/proc/self/cgroup), v2's file
// read through v2_limit and v1's (the controller's own hierarchy) through v1_limit; 0 for none.
template <typename V2Limit, typename V1Limit>
int64_t tightest_of_process(const std::string& proc_root, const std::string& cgroup_root,
                            const std::string& controller, V2Limit v2_limit_of, V1Limit v1_limit_of) {
  std::ifstream membership(proc_root + "/self/cgroup");
  if (!membership) return 0;
  int64_t tightest = 0;
  // Lines are "ID:CONTROLLERS:PATH"; v2's is "0::PATH".
  for (std::string line; std::getline(membership, line);) {
    const size_t first = line.find(':');
    const size_t second = first == std::string::npos ? std::string::npos : line.find(':', first + 1);
    if (second == std::string::npos) continue;
    const std::string controllers = line.substr(first + 1, second - first - 1);
    const std::string path = line.substr(second + 1);
    if (controllers.empty()) {
      // Unified hierarchy at the root, or under unified/ on a hybrid system.
      tightest = tighter(tightest_on_path(cgroup_root, path, v2_limit_of), tightest);
      tightest = tighter(tightest_on_path(cgroup_root + "/unified", path, v2_limit_of), tightest);
    } else if (has_controller(controllers, controller)) {
      // v1 mounts a controller under the joint name of this line (cpu,cpuacct) or its own (a link).
      tightest = tighter(tightest_on_path(cgroup_root + "/" + controllers, path, v1_limit_of), tightest);
      if (controllers != controller) {
        tightest = tighter(tightest_on_path(cgroup_root + "/" + controller, path, v1_limit_of), tightest);
      }
    }
  }
  return tightest;
}

}  // namespace

int cgroup_cpu_limit(const std::string& proc_root, const std::string& cgroup_root) {
  return static_cast<int>(tightest_of_process(proc_root, cgroup_root, "cpu", v2_limit, v1_limit));
}

int64_t cgroup_memory_limit(const std::string& proc_root, const std::string& cgroup_root) {
  return tightest_of_process(proc_root, cgroup_root, "memory", v2_memory_limit, v1_memory_limit);
}

int64_t memory_ceiling() {
  static const int64_t ceiling = [] {
    int64_t machine = 0;
    struct sysinfo info {};
    if (sysinfo(&info) == 0) {
      const uint64_t unit = info.mem_unit == 0 ? 1 : info.mem_unit;
      const uint64_t bytes = (static_cast<uint64_t>(info.totalram) + info.totalswap) * unit;
      machine = static_cast<int64_t>(std::min<uint64_t>(bytes, std::numeric_limits<int64_t>::max()));
    }
    return tighter(cgroup_memory_limit(), machine);
  }();
  return ceiling;
}

bool fits_memory_ceiling(uint64_t bytes) {
  const int64_t ceiling = memory_ceiling();
  return ceiling <= 0 || bytes <= static_cast<uint64_t>(ceiling);
}

}  // namespace sampleattn::cpu
