// The CPU time a cgroup quota grants the process, as a whole number of CPUs: the default thread
// count must not exceed it, or a container limited to 2 CPUs on a 64-core host runs 64 workers
// that the scheduler throttles in turn (every parallel step then waits for the throttled ones).
#pragma once

#include <string>

namespace sampleattn::cpu {

// ceil(quota / period) of the tightest CPU quota on the process's cgroup and its ancestors, or 0
// when none is set. cgroup v2: cpu.max ("max 100000" = no limit, "150000 100000" = 1.5 CPUs);
// cgroup v1: cpu.cfs_quota_us (-1 = no limit) over cpu.cfs_period_us. The cgroup paths come from
// proc_root/self/cgroup and are looked up under cgroup_root, each directory from the process's
// own up to cgroup_root itself (a container usually sees its own cgroup mounted there, so the
// deeper paths are then missing and skipped). Missing or malformed files count as no limit.
// The roots are parameters so tests can feed fake files.
int cgroup_cpu_limit(const std::string& proc_root = "/proc",
                     const std::string& cgroup_root = "/sys/fs/cgroup");

}  // namespace sampleattn::cpu
