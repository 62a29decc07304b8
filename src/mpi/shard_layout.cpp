#include "mpi/shard_layout.h"

#include <algorithm>
#include <string>

namespace sampleattn::mpi {
namespace {

// floor(c * L / n) without overflow for the sizes the ABI allows (L < 2^31, n < 2^31).
int64_t cut(int64_t c, int64_t length, int64_t n) {
  return static_cast<int64_t>((static_cast<__int128>(c) * length) / n);
}

void append(std::vector<Run>* runs, int seq, int64_t begin, int64_t end) {
  if (end <= begin) return;
  const int64_t local = runs->empty() ? 0 : runs->back().local + runs->back().len;
  runs->push_back({seq, begin, end - begin, local});
}

}  // namespace

std::vector<Run> formula_runs(sampleattn_mpi_split split, const std::vector<int64_t>& lengths, int rank,
                              int ranks) {
  std::vector<Run> runs;
  for (size_t b = 0; b < lengths.size(); ++b) {
    const int64_t length = lengths[b];
    const int seq = static_cast<int>(b);
    if (split == SAMPLEATTN_MPI_SPLIT_ZIGZAG) {
      const int64_t chunks = 2 * static_cast<int64_t>(ranks);
      const int64_t first = rank, second = chunks - 1 - rank;
      append(&runs, seq, cut(first, length, chunks), cut(first + 1, length, chunks));
      append(&runs, seq, cut(second, length, chunks), cut(second + 1, length, chunks));
    } else {
      append(&runs, seq, cut(rank, length, ranks), cut(rank + 1, length, ranks));
    }
  }
  return runs;
}

Status explicit_runs(const int64_t* begin, const int64_t* length, const std::vector<int64_t>& lengths,
                     std::vector<Run>* out) {
  if ((begin == nullptr) != (length == nullptr)) {
    return null_pointer(std::string("shard.") + (begin == nullptr ? "begin" : "length") +
                        " is NULL while shard." + (begin == nullptr ? "length" : "begin") +
                        " is set: give both (explicit runs) or neither (the even split)");
  }
  out->clear();
  for (size_t b = 0; b < lengths.size(); ++b) {
    if (begin[b] < 0 || length[b] < 0 || begin[b] > lengths[b] || length[b] > lengths[b] - begin[b]) {
      return invalid_shape("shard run of sequence " + std::to_string(b) + " is [" + std::to_string(begin[b]) + ", " +
                           std::to_string(begin[b]) + " + " + std::to_string(length[b]) +
                           "), outside the sequence's " + std::to_string(lengths[b]) + " positions");
    }
    append(out, static_cast<int>(b), begin[b], begin[b] + length[b]);
  }
  return Status::ok();
}

Status check_cover(const ShardLayout& layout, const std::vector<int64_t>& lengths) {
  struct Piece {
    int64_t begin, end;
    int rank;
  };
  for (size_t b = 0; b < lengths.size(); ++b) {
    std::vector<Piece> pieces;
    for (size_t r = 0; r < layout.runs.size(); ++r) {
      for (const Run& run : layout.runs[r]) {
        if (run.seq == static_cast<int>(b)) pieces.push_back({run.begin, run.end(), static_cast<int>(r)});
      }
    }
    std::sort(pieces.begin(), pieces.end(), [](const Piece& x, const Piece& y) { return x.begin < y.begin; });
    int64_t covered = 0;
    for (const Piece& p : pieces) {
      if (p.begin != covered) {
        return invalid_shape("the ranks' shards of sequence " + std::to_string(b) + " do not cover it once: " +
                             (p.begin > covered ? "positions [" + std::to_string(covered) + ", " +
                                                      std::to_string(p.begin) + ") are held by no rank"
                                                : "rank " + std::to_string(p.rank) + "'s run [" +
                                                      std::to_string(p.begin) + ", " + std::to_string(p.end) +
                                                      ") overlaps another rank's"));
      }
      covered = p.end;
    }
    if (covered != lengths[b]) {
      return invalid_shape("the ranks' shards of sequence " + std::to_string(b) + " end at position " +
                           std::to_string(covered) + " of its " + std::to_string(lengths[b]));
    }
  }
  return Status::ok();
}

}  // namespace sampleattn::mpi
