// SampleAttention across ranks (docs/SCALING.md): libsampleattn's sharded call
// (api/sharded_api.h) with its collective operations on MPI. Stages 1 and 2 and the attention run
// inside libsampleattn; this fills the callbacks, counts what they move and times their waits.
#pragma once

#include <mpi.h>

#include "core/status.h"
#include "mpi/ring_attention.h"
#include "sampleattn/sampleattn_mpi.h"

namespace sampleattn::mpi {

// Writes this rank's output rows (and lse) of a method-sample call, or returns an error on every
// rank. stats: filled on success (sample_stats too, when the caller set it).
Status sharded_sample(const RingCall& call, sampleattn_mpi_stats* stats);

}  // namespace sampleattn::mpi
