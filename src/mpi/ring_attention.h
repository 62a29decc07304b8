// Dense context-parallel attention: every rank's K/V block travels once around the ring of ranks;
// each rank attends its own query runs to each block as it passes (libsampleattn calls on the
// pairs of runs that see each other) and merges the partial results by their log-sum-exp
// (docs/SCALING.md).
#pragma once

#include <mpi.h>

#include "core/status.h"
#include "mpi/shard_layout.h"
#include "sampleattn/sampleattn.h"
#include "sampleattn/sampleattn_mpi.h"

namespace sampleattn::mpi {

struct RingCall {
  sampleattn_context* context = nullptr;
  MPI_Comm comm = MPI_COMM_NULL;
  int rank = 0, ranks = 1;
  sampleattn_params params{};  // the caller's, read at full size; local tensors, global sequences
  int head_dim_v = 0;          // resolved (never 0)
  int threads = 1;             // the context's CPU workers: the merge's threads between calls
  ShardLayout layout;
};

// Runs the ring and writes this rank's output rows (and lse), or returns an error on every rank
// (agreed: no rank writes then). stats: filled on success.
Status ring_attention(const RingCall& call, sampleattn_mpi_stats* stats);

}  // namespace sampleattn::mpi
