// The seam between one process's SampleAttention and the processes that share a prompt (context
// parallelism, docs/SCALING.md): the few collective operations a sharded call needs. libsampleattn
// never links a communication library; libsampleattn_mpi fills this interface with MPI, and the
// tests with threads (tests/thread_collective.h). Every process calls the same operations in the
// same order with the same sizes, as MPI's collectives require.
#pragma once

#include <cstdint>
#include <string>

#include "core/status.h"

namespace sampleattn {

class Collective {
 public:
  virtual ~Collective() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;

  // In place over every process: element-wise sums and maxima of `n` values.
  virtual Status sum(int64_t* values, int64_t n) = 0;
  virtual Status sum(double* values, int64_t n) = 0;
  virtual Status max(float* values, int64_t n) = 0;

  // Every process's bytes, concatenated in rank order: recv_bytes[r] from process r (this one
  // sends recv_bytes[rank()] bytes from `send`).
  virtual Status all_gather(const void* send, void* recv, const int64_t* recv_bytes) = 0;

  // send_bytes[r] bytes to process r (in `send`, concatenated in rank order) and recv_bytes[r]
  // from it (into `recv`, the same way). Both sides know every count. `what` says what moves, so
  // that an implementation can count it.
  enum class Payload { kQueryRows, kKvRows };
  virtual Status all_to_all(const void* send, const int64_t* send_bytes, void* recv, const int64_t* recv_bytes,
                            Payload what) = 0;
};

// Whether any process failed a local step: every process calls this at the same points, so a
// failure on one does not leave the others waiting in the next collective. `when` ends the
// message the others return ("another process of the sharded call failed <when> ...").
inline Status agree(Collective& coll, const Status& local, const char* when = "") {
  int64_t failed = local.is_ok() ? 0 : 1;
  SAMPLEATTN_RETURN_IF_ERROR(coll.sum(&failed, 1));
  if (!local.is_ok()) return local;
  if (failed > 0) {
    return internal_error(std::string("another process of the sharded call failed") + when + " (its own status says why)");
  }
  return Status::ok();
}

}  // namespace sampleattn
