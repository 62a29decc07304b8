// Which positions of which sequence each rank holds (sampleattn_mpi_shard), as runs: the one
// description the ring, the agreement checks and the merge all read. A rank's local tokens are its
// runs laid end to end, in batch order and, within a sequence, in the split's order.
#pragma once

#include <cstdint>
#include <vector>

#include "core/status.h"
#include "sampleattn/sampleattn_mpi.h"

namespace sampleattn::mpi {

struct Run {
  int32_t seq = 0;
  int64_t begin = 0;  // first position in the sequence
  int64_t len = 0;
  int64_t local = 0;  // first local token of the rank that holds it

  int64_t end() const { return begin + len; }
};

// Every rank's runs: runs[r] for rank r, and the tokens each rank holds.
struct ShardLayout {
  std::vector<std::vector<Run>> runs;
  std::vector<int64_t> tokens;
};

// The runs of rank r of P for sequences of `lengths` under a split with no explicit runs
// (CONTIGUOUS even, or ZIGZAG). Empty runs are dropped.
std::vector<Run> formula_runs(sampleattn_mpi_split split, const std::vector<int64_t>& lengths, int rank,
                              int ranks);

// This rank's runs of an explicit CONTIGUOUS shard (begin/length per sequence), checked against the
// sequence lengths.
Status explicit_runs(const int64_t* begin, const int64_t* length, const std::vector<int64_t>& lengths,
                     std::vector<Run>* out);

// Checks that the runs of all ranks cover every sequence exactly once (the same verdict on every
// rank, which all hold the same layout).
Status check_cover(const ShardLayout& layout, const std::vector<int64_t>& lengths);

}  // namespace sampleattn::mpi
