// What the host grants the process, from its cgroups and the kernel: the CPU time (the default
// thread count must not exceed it, or a container limited to 2 CPUs on a 64-core host runs 64
// workers that the scheduler throttles in turn, and every parallel step then waits for the
// throttled ones) and the memory (a request past it can never be met: on a host that overcommits,
// the allocation succeeds and the process is killed when it touches the pages, so large buffers
// are checked against it first and refused as OUT_OF_MEMORY).
#pragma once

#include <cstdint>
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

// The tightest memory limit in bytes on the same cgroups, or 0 when none is set. cgroup v2:
// memory.max ("max" = no limit); cgroup v1: memory.limit_in_bytes (no limit reads as a number near
// 2^63, so 2^60 bytes and more count as none). Same lookup and rules as cgroup_cpu_limit.
int64_t cgroup_memory_limit(const std::string& proc_root = "/proc",
                            const std::string& cgroup_root = "/sys/fs/cgroup");

// The most memory the process could ever hold, in bytes: the machine's RAM plus swap (sysinfo),
// or the cgroup memory limit when that is lower. Read once per process (the first call). Not what
// is free now: a request under it may still fail, one over it always does.
int64_t memory_ceiling();

// True when bytes can be asked for: at most memory_ceiling() (or the ceiling is unknown, 0).
bool fits_memory_ceiling(uint64_t bytes);

}  // namespace sampleattn::cpu
