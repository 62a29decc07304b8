#include "core/shard_map.h"

#include <algorithm>
#include <numeric>
#include <tuple>

namespace sampleattn {
namespace {

// floor(c * L / n) without overflow (L < 2^62 / n for any n the ABI allows).
int64_t cut(int64_t c, int64_t length, int64_t n) {
  return static_cast<int64_t>((static_cast<__int128>(c) * length) / n);
}

struct Piece {
  int seq;
  int64_t begin, end;
  int holder;
};

}  // namespace

StageKeys stage1_keys(const ShardMap& map, const std::vector<int64_t>& lengths) {
  const int processes = map.processes();
  std::vector<std::vector<Piece>> pieces(static_cast<size_t>(processes));
  std::vector<std::vector<Piece>> runs_of(lengths.size());  // each sequence's runs with their holders
  for (int r = 0; r < processes; ++r) {
    for (const ShardRun& run : map.runs[static_cast<size_t>(r)]) {
      if (run.end > run.begin) runs_of[static_cast<size_t>(run.seq)].push_back({run.seq, run.begin, run.end, r});
    }
  }
  for (size_t s = 0; s < lengths.size(); ++s) {
    const int seq = static_cast<int>(s);
    const std::vector<Piece>& held = runs_of[s];
    const int64_t chunks = 2 * static_cast<int64_t>(processes);
    const auto chunk = [&](int64_t c) {
      return std::pair<int64_t, int64_t>{cut(c, lengths[s], chunks), cut(c + 1, lengths[s], chunks)};
    };
    const auto pair_chunks = [&](int k) { return std::pair{chunk(k), chunk(chunks - 1 - k)}; };
    // Pair k to the k-th process in the order of its first position in the sequence (then rank).
    std::vector<int64_t> first(static_cast<size_t>(processes), lengths[s]);
    for (const Piece& h : held) first[h.holder] = std::min(first[h.holder], h.begin);
    std::vector<int> owner(static_cast<size_t>(processes));
    std::iota(owner.begin(), owner.end(), 0);
    std::stable_sort(owner.begin(), owner.end(), [&](int x, int y) { return first[x] < first[y]; });
    for (int k = 0; k < processes; ++k) {
      const auto [a, b] = pair_chunks(k);
      for (const auto& [lo, hi] : {a, b}) {
        for (const Piece& h : held) {
          const int64_t begin = std::max(lo, h.begin), end = std::min(hi, h.end);
          if (end > begin) pieces[static_cast<size_t>(owner[k])].push_back({seq, begin, end, h.holder});
        }
      }
    }
  }
  StageKeys keys;
  keys.map.runs.resize(static_cast<size_t>(processes));
  keys.holder.resize(static_cast<size_t>(processes));
  for (int p = 0; p < processes; ++p) {
    std::vector<Piece>& list = pieces[static_cast<size_t>(p)];
    std::sort(list.begin(), list.end(), [](const Piece& x, const Piece& y) {
      return std::tie(x.holder, x.seq, x.begin) < std::tie(y.holder, y.seq, y.begin);
    });
    int64_t local = 0;
    for (const Piece& piece : list) {
      std::vector<ShardRun>& runs = keys.map.runs[static_cast<size_t>(p)];
      std::vector<int>& holders = keys.holder[static_cast<size_t>(p)];
      if (!runs.empty() && holders.back() == piece.holder && runs.back().seq == piece.seq &&
          runs.back().end == piece.begin) {
        runs.back().end = piece.end;  // the two chunks of a pair that touch (the middle pair)
      } else {
        runs.push_back({piece.seq, piece.begin, piece.end, local});
        holders.push_back(piece.holder);
      }
      local += piece.end - piece.begin;
    }
  }
  return keys;
}

}  // namespace sampleattn
