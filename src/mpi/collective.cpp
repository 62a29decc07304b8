#include "mpi/collective.h"

#include <algorithm>
#include <string>

namespace sampleattn::mpi {
namespace {

constexpr uint64_t kPieceBytes = uint64_t{1} << 30;

}  // namespace

Status mpi_status(int code, const char* what) {
  if (code == MPI_SUCCESS) return Status::ok();
  char text[MPI_MAX_ERROR_STRING] = {};
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) length = 0;
  return internal_error(std::string(what) + " failed: " + (length > 0 ? std::string(text, length) : "MPI error " + std::to_string(code)));
}

Status agree(MPI_Comm comm, const Status& local) {
  int ranks = 0, rank = 0;
  SAMPLEATTN_RETURN_IF_ERROR(mpi_status(MPI_Comm_size(comm, &ranks), "MPI_Comm_size"));
  SAMPLEATTN_RETURN_IF_ERROR(mpi_status(MPI_Comm_rank(comm, &rank), "MPI_Comm_rank"));
  const int mine = static_cast<int>(local.code());
  std::vector<int> codes(static_cast<size_t>(ranks));
  SAMPLEATTN_RETURN_IF_ERROR(
      mpi_status(MPI_Allgather(&mine, 1, MPI_INT, codes.data(), 1, MPI_INT, comm), "MPI_Allgather (agreement)"));
  const auto failed = std::find_if(codes.begin(), codes.end(), [](int c) { return c != SAMPLEATTN_SUCCESS; });
  if (failed == codes.end()) return Status::ok();
  const int first = static_cast<int>(failed - codes.begin());
  // The first failing rank's message, for the others.
  int length = first == rank ? static_cast<int>(std::min<size_t>(local.message().size(), 4096)) : 0;
  SAMPLEATTN_RETURN_IF_ERROR(mpi_status(MPI_Bcast(&length, 1, MPI_INT, first, comm), "MPI_Bcast (agreement)"));
  std::string message = first == rank ? local.message().substr(0, static_cast<size_t>(length))
                                      : std::string(static_cast<size_t>(length), '\0');
  SAMPLEATTN_RETURN_IF_ERROR(
      mpi_status(MPI_Bcast(message.data(), length, MPI_CHAR, first, comm), "MPI_Bcast (agreement)"));
  if (!local.is_ok()) return local;
  return {static_cast<sampleattn_status>(codes[static_cast<size_t>(first)]), "rank " + std::to_string(first) + ": " + message};
}

Status check_same(MPI_Comm comm, const std::vector<int64_t>& values, const std::vector<const char*>& names) {
  std::vector<int64_t> root(values);
  SAMPLEATTN_RETURN_IF_ERROR(mpi_status(
      MPI_Bcast(root.data(), static_cast<int>(root.size()), MPI_INT64_T, 0, comm), "MPI_Bcast (parameters)"));
  for (size_t i = 0; i < values.size(); ++i) {
    if (values[i] != root[i]) {
      return invalid_argument(std::string("the ranks disagree on ") + names[i] + ": rank 0 has " +
                              std::to_string(root[i]) + ", this rank " + std::to_string(values[i]) +
                              " (every rank must pass the same shapes and parameters)");
    }
  }
  return Status::ok();
}

Status post_send(const void* data, uint64_t bytes, int peer, int tag, MPI_Comm comm, std::vector<MPI_Request>* requests) {
  const char* p = static_cast<const char*>(data);
  for (uint64_t done = 0; done < bytes; done += kPieceBytes, ++tag) {
    const int n = static_cast<int>(std::min(kPieceBytes, bytes - done));
    MPI_Request request;
    SAMPLEATTN_RETURN_IF_ERROR(mpi_status(MPI_Isend(p + done, n, MPI_BYTE, peer, tag, comm, &request), "MPI_Isend"));
    requests->push_back(request);
  }
  return Status::ok();
}

Status post_receive(void* data, uint64_t bytes, int peer, int tag, MPI_Comm comm, std::vector<MPI_Request>* requests) {
  char* p = static_cast<char*>(data);
  for (uint64_t done = 0; done < bytes; done += kPieceBytes, ++tag) {
    const int n = static_cast<int>(std::min(kPieceBytes, bytes - done));
    MPI_Request request;
    SAMPLEATTN_RETURN_IF_ERROR(mpi_status(MPI_Irecv(p + done, n, MPI_BYTE, peer, tag, comm, &request), "MPI_Irecv"));
    requests->push_back(request);
  }
  return Status::ok();
}

}  // namespace sampleattn::mpi
