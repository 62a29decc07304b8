// cgroup CPU quotas (see cpu_quota.h). Only plain file reads: no exceptions leave, nothing is
// cached (a thread pool asks once, when it is created).
#include "cpu/cpu_quota.h"

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

// The tightest limit in mount/path and each of its ancestors up to mount itself.
template <typename Limit>
int tightest_on_path(const std::string& mount, const std::string& path, Limit limit_of) {
  std::vector<std::string> parts = path_components(path);
  int tightest = 0;
  for (;;) {
    std::string directory = mount;
    for (const std::string& part : parts) directory += "/" + part;
    const int limit = limit_of(directory);
    if (limit > 0 && (tightest == 0 || limit < tightest)) tightest = limit;
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

}  // namespace

int cgroup_cpu_limit(const std::string& proc_root, const std::string& cgroup_root) {
  std::ifstream membership(proc_root + "/self/cgroup");
  if (!membership) return 0;
  int tightest = 0;
  auto take = [&](int limit) {
    if (limit > 0 && (tightest == 0 || limit < tightest)) tightest = limit;
  };
  // Lines are "ID:CONTROLLERS:PATH"; v2's is "0::PATH".
  for (std::string line; std::getline(membership, line);) {
    const size_t first = line.find(':');
    const size_t second = first == std::string::npos ? std::string::npos : line.find(':', first + 1);
    if (second == std::string::npos) continue;
    const std::string controllers = line.substr(first + 1, second - first - 1);
    const std::string path = line.substr(second + 1);
    if (controllers.empty()) {
      // Unified hierarchy at the root, or under unified/ on a hybrid system.
      take(tightest_on_path(cgroup_root, path, v2_limit));
      take(tightest_on_path(cgroup_root + "/unified", path, v2_limit));
    } else if (has_controller(controllers, "cpu")) {
      // v1 mounts the cpu controller as cpu,cpuacct (the name in this line) or cpu (a link).
      take(tightest_on_path(cgroup_root + "/" + controllers, path, v1_limit));
      if (controllers != "cpu") take(tightest_on_path(cgroup_root + "/cpu", path, v1_limit));
    }
  }
  return tightest;
}

}  // namespace sampleattn::cpu
