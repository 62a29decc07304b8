// The MPI layer's few collective steps: the agreement that makes every rank return an error when
// one rank has one (so that no rank waits for a peer that has given up), MPI errors as statuses,
// and messages of any size (MPI counts are int: large blocks go in pieces).
#pragma once

#include <mpi.h>

#include <cstdint>
#include <vector>

#include "core/status.h"

namespace sampleattn::mpi {

// An MPI return code as a status ("<what>: <MPI's error string>").
Status mpi_status(int code, const char* what);

// Every rank passes its own verdict and gets back: its own when it failed; else, when another rank
// failed, that rank's status code with "rank N: <its message>" (the lowest failing rank); else ok.
// Collective over comm. An MPI error in the agreement itself is returned as such.
Status agree(MPI_Comm comm, const Status& local);

// Whether every rank holds the same values (the shapes and parameters a collective call must
// share). On a mismatch: which entry (names[i]) differs, rank 0's value and this rank's.
Status check_same(MPI_Comm comm, const std::vector<int64_t>& values, const std::vector<const char*>& names);

// Posts the transfer of `bytes` bytes to (send) or from (receive) `peer`, in pieces of at most
// 1 GiB with tags tag, tag + 1, ...; the requests are appended to `requests`.
Status post_send(const void* data, uint64_t bytes, int peer, int tag, MPI_Comm comm, std::vector<MPI_Request>* requests);
Status post_receive(void* data, uint64_t bytes, int peer, int tag, MPI_Comm comm, std::vector<MPI_Request>* requests);

}  // namespace sampleattn::mpi
