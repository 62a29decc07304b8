// Which process holds which positions of a batch split by sequence (context parallelism,
// docs/SCALING.md): every process's runs of consecutive positions, each at a token offset of that
// process's Q/K/V/O tensors. The same on every process of a sharded call.
#pragma once

#include <cstdint>
#include <vector>

namespace sampleattn {

struct ShardRun {
  int seq = 0;
  int64_t begin = 0;  // positions [begin, end) of the sequence
  int64_t end = 0;
  int64_t local = 0;  // token of position `begin` in the holder's tensors
};

struct ShardMap {
  std::vector<std::vector<ShardRun>> runs;  // [process]: its runs, in its tensors' token order

  int processes() const { return static_cast<int>(runs.size()); }
};

}  // namespace sampleattn
