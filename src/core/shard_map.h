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

// The keys each process scores in stage 1 of a sharded call (docs/SCALING.md, "Stage 1's keys").
// A sampled row is scored against every earlier key by the processes that hold those keys, so
// under a contiguous split the process holding a sequence's first keys scores nearly every
// sampled row against them: 2P - 1 times the last process's work. Stage 1 reads instead the keys
// of a balanced map: each sequence cut into 2P chunks (cut c at floor(c * L / 2P), as the zigzag
// split), chunks c and 2P - 1 - c paired, which gives every pair the same stage-1 work, and pair k
// given to the k-th process in the order of where its keys of the sequence begin. A zigzag split
// keeps its own keys. Under a contiguous one each process receives K rows (not V) for up to two
// chunks, and the processes holding the latest keys, which read the most K/V for the attention
// (bands, stripes, dense heads), score the middle chunks and so receive the fewest sampled rows.
struct StageKeys {
  // [process]: its stage-1 keys in runs that one process of the shard map holds each, ordered by
  // that holder, then sequence and position; `local` is the run's first row in the process's
  // gathered K rows (the holders' rows in rank order).
  ShardMap map;
  std::vector<std::vector<int>> holder;  // [process][run]: the process holding it in the shard map
};

// `lengths`: every sequence's length; `map` covers each once.
StageKeys stage1_keys(const ShardMap& map, const std::vector<int64_t>& lengths);

}  // namespace sampleattn
