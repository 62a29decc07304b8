#include "core/shard_map.h"

#include <algorithm>
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
    // Pair k's overlap with each process's runs, largest first; ties to the process holding fewer
    // keys of the sequence (the one that would otherwise receive more), then the lower pair and
    // process.
    std::vector<int64_t> holds(static_cast<size_t>(processes), 0);
    for (const Piece& h : held) holds[h.holder] += h.end - h.begin;
    std::vector<std::tuple<int64_t, int64_t, int, int>> order;  // (-overlap, holds, pair, process)
    for (int k = 0; k < processes; ++k) {
      const auto [a, b] = pair_chunks(k);
      std::vector<int64_t> overlap(static_cast<size_t>(processes), 0);
      for (const Piece& h : held) {
        for (const auto& [lo, hi] : {a, b}) {
          overlap[h.holder] += std::max<int64_t>(0, std::min(hi, h.end) - std::max(lo, h.begin));
        }
      }
      for (int r = 0; r < processes; ++r) order.emplace_back(-overlap[r], holds[r], k, r);
    }
    std::sort(order.begin(), order.end());
    std::vector<int> owner(static_cast<size_t>(processes), -1);
    std::vector<char> taken(static_cast<size_t>(processes), 0);
    for (const auto& [negative, keys, k, r] : order) {
      if (owner[k] >= 0 || taken[r]) continue;
      owner[k] = r;
      taken[r] = 1;
    }
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
