// What `sampleattn_context_info` says about the host beyond the backend in use: the CPU model,
// the kernel tables this CPU runs, and the SAMPLEATTN_* environment variables read or rejected.
// Built once per process (the environment is read once, as the dispatch and the pool read it).
#pragma once

#include <string>

namespace sampleattn {

struct HostReport {
  std::string cpu_model;
  std::string cpu_tables;
  std::string environment;
};

const HostReport& host_report();

}  // namespace sampleattn
