#include "mpi/sharded_sample.h"

#include <chrono>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "api/sharded_api.h"
#include "mpi/collective.h"

namespace sampleattn::mpi {
namespace {

// Tags of the point-to-point exchanges (all_gather, all_to_all); each exchange is complete
// before the next starts, so one base serves them all (pieces add to it, under 2^15).
constexpr int kExchangeTag = 1000;

struct CallState {
  MPI_Comm comm = MPI_COMM_NULL;
  int rank = 0, ranks = 1;
  uint64_t sent = 0, received = 0;
  uint64_t received_query_rows = 0, received_kv_rows = 0;
  double wait_s = 0;
  std::string error;
};

// Runs one MPI step as a callback: times it and turns a failure into a code and a message.
template <typename Step>
sampleattn_status step(void* state, const char** error, Step&& body) {
  CallState& s = *static_cast<CallState*>(state);
  const auto t0 = std::chrono::steady_clock::now();
  const Status status = body(s);
  s.wait_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (status.is_ok()) return SAMPLEATTN_SUCCESS;
  s.error = status.message();
  *error = s.error.c_str();
  return status.code();
}

// In-place all-reduce in pieces whose counts fit MPI's int.
Status all_reduce(CallState& s, void* values, int64_t n, MPI_Datatype type, size_t size, MPI_Op op) {
  constexpr int64_t kPiece = int64_t{1} << 28;
  char* p = static_cast<char*>(values);
  for (int64_t done = 0; done < n; done += kPiece) {
    const int count = static_cast<int>(std::min(kPiece, n - done));
    SAMPLEATTN_RETURN_IF_ERROR(
        mpi_status(MPI_Allreduce(MPI_IN_PLACE, p + done * size, count, type, op, s.comm), "MPI_Allreduce"));
  }
  // What a reduction moves is counted as its vector, once each way (nothing on one rank).
  if (s.ranks > 1) {
    s.sent += static_cast<uint64_t>(n) * size;
    s.received += static_cast<uint64_t>(n) * size;
  }
  return Status::ok();
}

// Point-to-point exchange: to[r] bytes at send + send_at[r] go to rank r, from[r] bytes from r
// land at recv + recv_at[r]; this rank's own part is copied.
Status exchange(CallState& s, const char* send, const std::vector<int64_t>& to, const std::vector<int64_t>& send_at,
                char* recv, const std::vector<int64_t>& from, const std::vector<int64_t>& recv_at) {
  std::vector<MPI_Request> requests;
  Status posted = Status::ok();
  for (int r = 0; r < s.ranks && posted.is_ok(); ++r) {
    if (r == s.rank || from[r] == 0) continue;
    posted = post_receive(recv + recv_at[r], static_cast<uint64_t>(from[r]), r, kExchangeTag, s.comm, &requests);
    s.received += static_cast<uint64_t>(from[r]);
  }
  for (int r = 0; r < s.ranks && posted.is_ok(); ++r) {
    if (r == s.rank || to[r] == 0) continue;
    posted = post_send(send + send_at[r], static_cast<uint64_t>(to[r]), r, kExchangeTag, s.comm, &requests);
    s.sent += static_cast<uint64_t>(to[r]);
  }
  if (to[s.rank] > 0) std::memcpy(recv + recv_at[s.rank], send + send_at[s.rank], static_cast<size_t>(to[s.rank]));
  const int waited = MPI_Waitall(static_cast<int>(requests.size()), requests.data(), MPI_STATUSES_IGNORE);
  SAMPLEATTN_RETURN_IF_ERROR(posted);
  return mpi_status(waited, "MPI_Waitall");
}

std::vector<int64_t> offsets(const int64_t* bytes, int n) {
  std::vector<int64_t> at(static_cast<size_t>(n), 0);
  for (int r = 1; r < n; ++r) at[r] = at[r - 1] + bytes[r - 1];
  return at;
}

sampleattn_status sum_i64(void* state, int64_t* values, int64_t n, const char** error) {
  return step(state, error, [&](CallState& s) { return all_reduce(s, values, n, MPI_INT64_T, sizeof(int64_t), MPI_SUM); });
}
sampleattn_status sum_f64(void* state, double* values, int64_t n, const char** error) {
  return step(state, error, [&](CallState& s) { return all_reduce(s, values, n, MPI_DOUBLE, sizeof(double), MPI_SUM); });
}
sampleattn_status max_f32(void* state, float* values, int64_t n, const char** error) {
  return step(state, error, [&](CallState& s) { return all_reduce(s, values, n, MPI_FLOAT, sizeof(float), MPI_MAX); });
}
sampleattn_status all_gather(void* state, const void* send, void* recv, const int64_t* recv_bytes, const char** error) {
  return step(state, error, [&](CallState& s) {
    // This rank's bytes go to every rank; every rank's land at its offset.
    const std::vector<int64_t> to(static_cast<size_t>(s.ranks), recv_bytes[s.rank]);
    const std::vector<int64_t> send_at(static_cast<size_t>(s.ranks), 0);
    return exchange(s, static_cast<const char*>(send), to, send_at, static_cast<char*>(recv),
                    std::vector<int64_t>(recv_bytes, recv_bytes + s.ranks), offsets(recv_bytes, s.ranks));
  });
}
sampleattn_status all_to_all(void* state, const void* send, const int64_t* send_bytes, void* recv,
                             const int64_t* recv_bytes, int32_t payload, const char** error) {
  return step(state, error, [&](CallState& s) {
    const uint64_t before = s.received;
    const Status status =
        exchange(s, static_cast<const char*>(send), std::vector<int64_t>(send_bytes, send_bytes + s.ranks),
                 offsets(send_bytes, s.ranks), static_cast<char*>(recv),
                 std::vector<int64_t>(recv_bytes, recv_bytes + s.ranks), offsets(recv_bytes, s.ranks));
    (payload == SAMPLEATTN_PRIVATE_QUERY_ROWS ? s.received_query_rows : s.received_kv_rows) += s.received - before;
    return status;
  });
}

}  // namespace

Status sharded_sample(const RingCall& call, sampleattn_mpi_stats* stats) {
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<sampleattn_private_run> runs;
  for (int r = 0; r < call.ranks; ++r) {
    for (const Run& run : call.layout.runs[static_cast<size_t>(r)]) {
      runs.push_back({run.seq, r, run.begin, run.end(), run.local});
    }
  }
  CallState state;
  state.comm = call.comm;
  state.rank = call.rank;
  state.ranks = call.ranks;
  sampleattn_private_collective collective{};
  collective.state = &state;
  collective.rank = call.rank;
  collective.size = call.ranks;
  collective.sum_i64 = sum_i64;
  collective.sum_f64 = sum_f64;
  collective.max_f32 = max_f32;
  collective.all_gather = all_gather;
  collective.all_to_all = all_to_all;
  // libsampleattn's statistics: the caller's, else (for the attention time) a local one.
  sampleattn_stats own;
  sampleattn_stats_init(&own);
  sampleattn_stats* sample_stats = stats != nullptr && stats->sample_stats != nullptr ? stats->sample_stats : &own;
  // One rank holds every position in order (every split's runs at one rank are the sequences
  // whole): the one-process call, which needs no second pass over the sampled rows.
  const sampleattn_status code =
      call.ranks == 1 ? sampleattn_forward(call.context, &call.params, stats != nullptr ? sample_stats : nullptr)
                      : sampleattn_private_sharded_forward(call.context, &call.params, runs.data(),
                                                           static_cast<int64_t>(runs.size()), &collective,
                                                           stats != nullptr ? sample_stats : nullptr);
  // libsampleattn agreed on every failure before returning it, so every rank returns here.
  if (code != SAMPLEATTN_SUCCESS) return {code, sampleattn_last_error()};
  if (stats != nullptr) {
    stats->time_total_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    stats->time_attention_s = sample_stats->time_attention_s;
    stats->time_wait_s = state.wait_s;
    stats->bytes_sent = state.sent;
    stats->bytes_received = state.received;
    stats->ring_steps = 0;
    stats->attention_calls = 1;
    stats->received_query_rows = state.received_query_rows;
    stats->received_kv_rows = state.received_kv_rows;
  }
  return Status::ok();
}

}  // namespace sampleattn::mpi
