#include "cpu/look.h"

#include <algorithm>
#include <chrono>
#include <limits>
#include <vector>

#include "core/mask.h"
#include "core/timing.h"
#include "cpu/aligned_buffer.h"
#include "cpu/kv_rows.h"
#include "cpu/scratch_carver.h"

namespace sampleattn::cpu {
namespace {

constexpr int kRows = kLookBlockRows;  // query rows of one head a look task (core/mask.h)
constexpr int kTile = 256;        // keys a score tile; packed K runs start at multiples of it
constexpr int kPackKeys = 2048;   // keys a packing task (a multiple of kTile)
constexpr int kKeyPadding = 32;   // the look's K layouts pad a run to at most 32 keys
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// A look task's scratch (a packing task uses kv_rows only): sizes with a null base.
struct Scratch {
  void* q;
  float* q_scales;
  int64_t* q_offsets;
  float* scores;  // [kRows][kTile]
  int32_t *lo, *mid, *hi, *row_pos, *key_pos;
  float *outer, *inner, *slopes;
  KvRows kv_rows;
};

Scratch carve(ScratchCarver c, const LookPath& look, int d, size_t* bytes = nullptr) {
  Scratch s;
  s.q = c.take_bytes(look.q_bytes(kRows, d));
  s.q_scales = c.take<float>(kRows);
  s.q_offsets = c.take<int64_t>(kRows);
  s.scores = c.take<float>(static_cast<size_t>(kRows) * kTile);
  s.lo = c.take<int32_t>(kRows);
  s.mid = c.take<int32_t>(kRows);
  s.hi = c.take<int32_t>(kRows);
  s.row_pos = c.take<int32_t>(kRows);
  s.key_pos = c.take<int32_t>(kTile);
  s.outer = c.take<float>(kRows);
  s.inner = c.take<float>(kRows);
  s.slopes = c.take<float>(kRows);
  s.kv_rows = KvRows::carve(c, kPackKeys);
  if (bytes != nullptr) *bytes = c.used();
  return s;
}

struct Block {
  int head;
  LookRowBlock rows;  // its queries (indices within the sequence): first, first + stride, ...
};

class Looker {
 public:
  Looker(const KernelTable& kernels, const Problem& problem, SparsePlan* plan)
      : kernels_(kernels), look_(kernels.look), p_(problem), plan_(plan),
        bar_(look_bar_log2(problem.sample.look)) {}

  size_t scratch_bytes() const {
    size_t bytes = 0;
    carve(ScratchCarver(), look_, p_.head_dim, &bytes);
    return bytes;
  }
  // The packed keys of the longest sequence, and their scales.
  uint64_t key_bytes() const {
    int64_t longest = 0;
    for (const Sequence& seq : p_.sequences) longest = std::max(longest, seq.k_len);
    return look_.k_bytes(static_cast<int>(round_up(longest, kTile)), p_.head_dim) + scale_bytes(longest);
  }

  Status run(ThreadPool& pool, uint64_t pool_limit, char* keys) {
    const int hq = p_.num_q_heads;
    for (size_t s = 0; s < p_.sequences.size(); ++s) {
      const Sequence& seq = p_.sequences[s];
      for (int g = 0; g < p_.num_kv_heads; ++g) {
        // The probe's blocks of the group's sparse heads, and their other blocks.
        std::vector<Block> probe, rest;
        std::vector<int64_t> probe_rows(static_cast<size_t>(p_.group), 0);
        for (int h = g * p_.group; h < (g + 1) * p_.group; ++h) {
          const HeadPlan& hp = plan_->head(static_cast<int>(s), h, hq);
          if (hp.dense) continue;
          // Rows whose band holds every key they see (p < window) have nothing to look at.
          const int64_t i0 = std::max<int64_t>(0, hp.window - seq.q_offset());
          std::vector<LookRowBlock> head_probe, head_rest;
          look_row_blocks(i0, seq.q_len, &head_probe, &head_rest);
          for (const LookRowBlock& r : head_probe) {
            probe.push_back({h, r});
            probe_rows[static_cast<size_t>(h - g * p_.group)] += r.count;
          }
          for (const LookRowBlock& r : head_rest) rest.push_back({h, r});
        }
        if (probe.empty()) continue;
        // The blocks' keys, packed once for the group's heads.
        const int64_t key_end = seq.k_len;
        float* scales = reinterpret_cast<float*>(keys + look_.k_bytes(static_cast<int>(round_up(key_end, kTile)), p_.head_dim));
        const int64_t chunks = (key_end + kPackKeys - 1) / kPackKeys;
        SAMPLEATTN_RETURN_IF_ERROR(pool.run(chunks, scratch_bytes(), pool_limit, [&](int64_t c, int, void* scratch) {
          const Scratch sc = carve(ScratchCarver(scratch), look_, p_.head_dim);
          const int64_t c0 = c * kPackKeys;
          const int n = static_cast<int>(std::min<int64_t>(kPackKeys, key_end - c0));
          sc.kv_rows.fill_run(p_, static_cast<int>(s), g, c0, n);
          look_.pack_k(sc.kv_rows.k(p_), n, p_.head_dim, 1.0f, keys + look_.k_bytes(static_cast<int>(c0), p_.head_dim),
                       scales + c0);
        }));
        SAMPLEATTN_RETURN_IF_ERROR(look_blocks(pool, pool_limit, static_cast<int>(s), keys, scales, &probe));
        // The heads whose probe flagged enough of its rows are looked at whole.
        std::erase_if(rest, [&](const Block& b) {
          return !look_whole_head(static_cast<int64_t>(plan_->heads[s * hq + b.head].dense_rows.size()),
                                  probe_rows[static_cast<size_t>(b.head - g * p_.group)]);
        });
        SAMPLEATTN_RETURN_IF_ERROR(look_blocks(pool, pool_limit, static_cast<int>(s), keys, scales, &rest));
        for (int h = g * p_.group; h < (g + 1) * p_.group; ++h) {
          std::vector<int32_t>& rows = plan_->heads[s * hq + h].dense_rows;
          std::sort(rows.begin(), rows.end());
        }
      }
    }
    return Status::ok();
  }

 private:
  static int64_t round_up(int64_t x, int64_t k) { return (x + k - 1) / k * k; }

  // Looks at the blocks of one sequence, the latest rows (which see the most keys) first, and adds
  // the rows flagged to their heads' dense rows.
  Status look_blocks(ThreadPool& pool, uint64_t pool_limit, int seq_index, const char* keys, const float* scales,
                     std::vector<Block>* blocks) const {
    std::stable_sort(blocks->begin(), blocks->end(), [](const Block& a, const Block& b) {
      return a.rows.first + int64_t{a.rows.count - 1} * a.rows.stride > b.rows.first + int64_t{b.rows.count - 1} * b.rows.stride;
    });
    std::vector<std::vector<int32_t>> flagged(blocks->size());
    SAMPLEATTN_RETURN_IF_ERROR(pool.run(static_cast<int64_t>(blocks->size()), scratch_bytes(), pool_limit,
                                        [&](int64_t t, int, void* scratch) {
      look_block(seq_index, (*blocks)[static_cast<size_t>(t)], keys, scales, scratch, &flagged[static_cast<size_t>(t)]);
    }));
    const size_t hq = static_cast<size_t>(p_.num_q_heads);
    for (size_t t = 0; t < blocks->size(); ++t) {
      std::vector<int32_t>& rows = plan_->heads[static_cast<size_t>(seq_index) * hq + (*blocks)[t].head].dense_rows;
      rows.insert(rows.end(), flagged[t].begin(), flagged[t].end());
    }
    return Status::ok();
  }
  static uint64_t scale_bytes(int64_t keys) { return static_cast<uint64_t>(round_up(keys, kTile) + kKeyPadding) * sizeof(float); }

  // One block of rows of one sparse head: each row's largest look score outside its band and
  // stripes (over the keys the model shows it) against its mask's largest.
  void look_block(int seq_index, const Block& b, const char* keys, const float* scales, void* scratch,
                  std::vector<int32_t>* flagged) const {
    const int d = p_.head_dim;
    const Scratch s = carve(ScratchCarver(scratch), look_, d);
    const Sequence& seq = p_.sequences[seq_index];
    const HeadPlan& hp = plan_->head(seq_index, b.head, p_.num_q_heads);
    const float slope = p_.score_mod(b.head).alibi_log2;
    int64_t first = std::numeric_limits<int64_t>::max(), last = 0;
    const int rows = b.rows.count;
    for (int r = 0; r < rows; ++r) {
      const int64_t i = b.rows.first + int64_t{r} * b.rows.stride;
      const int64_t p = seq.q_offset() + i;
      s.q_offsets[r] = (seq.q_begin + i) * p_.q.token_stride + b.head * p_.q.head_stride;
      s.row_pos[r] = static_cast<int32_t>(p);
      s.slopes[r] = slope;
      s.outer[r] = kNegInf;
      s.inner[r] = kNegInf;
      first = std::min(first, model_lo(p, p_.window_left));
      last = std::max(last, causal_end(p));
    }
    look_.pack_q({p_.q.data, p_.q.dtype, 0, s.q_offsets}, rows, d, scale_log2(p_.scale), s.q, s.q_scales);
    ScoreModArgs mod;
    mod.softcap = p_.score_mod(0).softcap_log2;  // one cap for every head
    if (!p_.alibi_slopes.empty()) {
      mod.alibi = s.slopes;
      mod.row_pos = s.row_pos;
      mod.key_pos = s.key_pos;
    }
    const std::vector<int32_t>& left_out = hp.has_look_stripes ? hp.look_stripes : hp.stripes;
    auto stripe = std::lower_bound(left_out.begin(), left_out.end(), static_cast<int32_t>(first / kTile * kTile));
    for (int64_t t0 = first / kTile * kTile; t0 < last; t0 += kTile) {
      const int n = static_cast<int>(std::min<int64_t>(kTile, last - t0));
      look_.scores(s.q, s.q_scales, rows, keys + look_.k_bytes(static_cast<int>(t0), d), scales + t0, n, d, s.scores,
                   kTile);
      if (mod.any()) {
        for (int c = 0; c < n; ++c) s.key_pos[c] = static_cast<int32_t>(t0 + c);
        kernels_.modify_scores(s.scores, kTile, rows, n, mod);
      }
      for (int r = 0; r < rows; ++r) {
        const int64_t p = s.row_pos[r];
        s.lo[r] = static_cast<int32_t>(std::clamp<int64_t>(model_lo(p, p_.window_left) - t0, 0, n));
        s.mid[r] = static_cast<int32_t>(std::clamp<int64_t>(window_lo(p, hp.window) - t0, 0, n));
        s.hi[r] = static_cast<int32_t>(std::clamp<int64_t>(causal_end(p) - t0, 0, n));
      }
      // A left-out stripe (or sink) is in every row's mask: a row whose band starts after it
      // (the last rows of the block) counts it with its band, not outside (a stripe inside a
      // row's band is the band's already). Its mask's largest score, not its band's alone, is
      // what a far key must come near: a row whose mass sits on its sinks loses little to a
      // key near its band's best.
      for (; stripe != left_out.end() && *stripe < t0 + n; ++stripe) {
        const int c = static_cast<int>(*stripe - t0);
        for (int r = rows - 1; r >= 0 && s.mid[r] > c; --r) {
          float& score = s.scores[static_cast<size_t>(r) * kTile + c];
          if (c >= s.lo[r]) s.inner[r] = std::max(s.inner[r], score);
          score = kNegInf;
        }
      }
      look_.row_max(s.scores, kTile, rows, n, s.lo, s.mid, s.hi, s.outer, s.inner);
    }
    for (int r = 0; r < rows; ++r) {
      if (s.outer[r] > kNegInf && s.outer[r] >= s.inner[r] - bar_) {
        flagged->push_back(static_cast<int32_t>(b.rows.first + int64_t{r} * b.rows.stride));
      }
    }
  }

  const KernelTable& kernels_;
  const LookPath& look_;
  const Problem& p_;
  SparsePlan* plan_;
  float bar_;  // look, log2 units
};

}  // namespace

Status find_dense_rows(ThreadPool& pool, uint64_t workspace_limit, const WorkspaceParts& during,
                       const KernelTable& kernels, const Problem& problem, SparsePlan* plan) {
  if (!(problem.sample.look > 0.f) || plan == nullptr) return Status::ok();
  const auto t0 = std::chrono::steady_clock::now();
  // A head that its mask and the look would take past it runs dense without the look.
  bool any_sparse = false;
  for (size_t s = 0; s < problem.sequences.size(); ++s) {
    for (int h = 0; h < problem.num_q_heads; ++h) {
      HeadPlan& hp = plan->heads[s * problem.num_q_heads + h];
      if (hp.dense) continue;
      if (look_runs_dense(problem, problem.sequences[s], hp)) {
        run_dense_look(problem.sequences[s], &hp);
      } else {
        any_sparse = true;
      }
    }
  }
  if (!any_sparse) {
    plan->time_selection_s += seconds_since(t0);
    return Status::ok();
  }
  Looker looker(kernels, problem, plan);
  WorkspaceParts parts = during;
  parts.selection = WorkspaceParts::add(parts.selection, looker.key_bytes());
  SAMPLEATTN_RETURN_IF_ERROR(check_workspace(parts, workspace_limit, "during the look"));
  AlignedBuffer keys = allocate_aligned(looker.key_bytes());
  if (!keys) return out_of_memory("the look's packed keys (" + std::to_string(looker.key_bytes()) + " bytes)");
  SAMPLEATTN_RETURN_IF_ERROR(looker.run(pool, parts.pool_limit(workspace_limit), keys.get()));
  // Then its dense rows count like the rest of the mask.
  for (size_t s = 0; s < problem.sequences.size(); ++s) {
    for (int h = 0; h < problem.num_q_heads; ++h) {
      HeadPlan& hp = plan->heads[s * problem.num_q_heads + h];
      if (!hp.dense && !hp.dense_rows.empty() && look_runs_dense(problem, problem.sequences[s], hp)) {
        run_dense_look(problem.sequences[s], &hp);
      }
    }
  }
  plan->time_selection_s += seconds_since(t0);
  return Status::ok();
}

}  // namespace sampleattn::cpu
