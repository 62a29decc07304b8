#include "cpu/look.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <limits>
#include <new>
#include <string>
#include <vector>

#include "core/dtype_convert.h"
#include "core/mask.h"
#include "core/timing.h"
#include "cpu/call_buffers.h"
#include "cpu/kv_rows.h"
#include "cpu/scratch_carver.h"
#include "simd/flash/look_quantize.h"

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
  // held: a sharded call's runs of this process ([sequence]: ascending), whose rows alone it looks
  // at, its Q holding them at their `local` tokens (null: every row, at q_begin + i).
  Looker(const KernelTable& kernels, const Problem& problem, SparsePlan* plan,
         const std::vector<std::vector<ShardRun>>* held = nullptr)
      : kernels_(kernels), look_(kernels.look), p_(problem), plan_(plan), held_(held),
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

  // One pass: the probe's rows of every sparse head (probe), or the other rows of the heads
  // `whole` names ([sequence * num_q_heads + head]). Adds the rows flagged to the plan's dense rows
  // (unsorted) and, for the probe, the rows it looked at to probe_rows.
  Status pass(ThreadPool& pool, uint64_t pool_limit, char* keys, bool probe, const std::vector<char>& whole,
              std::vector<int64_t>* probe_rows) {
    const int hq = p_.num_q_heads;
    for (size_t s = 0; s < p_.sequences.size(); ++s) {
      const Sequence& seq = p_.sequences[s];
      for (int g = 0; g < p_.num_kv_heads; ++g) {
        std::vector<Block> blocks;
        for (int h = g * p_.group; h < (g + 1) * p_.group; ++h) {
          const size_t i = s * static_cast<size_t>(hq) + static_cast<size_t>(h);
          if (plan_->heads[i].dense || (!probe && whole[i] == 0)) continue;
          // Rows whose band holds every key they see (p < window) have nothing to look at.
          const int64_t i0 = std::max<int64_t>(0, plan_->heads[i].window - seq.q_offset());
          std::vector<LookRowBlock> head_probe, head_rest;
          look_row_blocks(i0, seq.q_len, &head_probe, &head_rest);
          for (const LookRowBlock& r : probe ? head_probe : head_rest) add_held(static_cast<int>(s), h, r, &blocks);
        }
        if (probe) {
          for (const Block& b : blocks) (*probe_rows)[s * static_cast<size_t>(hq) + static_cast<size_t>(b.head)] += b.rows.count;
        }
        if (blocks.empty()) continue;
        // The keys, packed once for the group's heads.
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
        SAMPLEATTN_RETURN_IF_ERROR(look_blocks(pool, pool_limit, static_cast<int>(s), keys, scales, &blocks));
      }
    }
    return Status::ok();
  }

 private:
  static int64_t round_up(int64_t x, int64_t k) { return (x + k - 1) / k * k; }

  // The rows of r this process holds, as blocks of the same stride (every row without held_).
  void add_held(int seq_index, int head, const LookRowBlock& r, std::vector<Block>* out) const {
    if (held_ == nullptr) {
      out->push_back({head, r});
      return;
    }
    LookRowBlock part{0, r.stride, 0};
    for (int k = 0; k < r.count; ++k) {
      const int64_t i = r.first + int64_t{k} * r.stride;  // the sharded call's q_offset is 0
      const bool mine = q_token(seq_index, i) >= 0;
      if (mine && part.count == 0) part.first = i;
      if (mine) ++part.count;
      if ((!mine || k + 1 == r.count) && part.count > 0) {
        out->push_back({head, part});
        part.count = 0;
      }
    }
  }

  // The Q token of row i of a sequence (-1: another process holds it).
  int64_t q_token(int seq_index, int64_t i) const {
    if (held_ == nullptr) return p_.sequences[static_cast<size_t>(seq_index)].q_begin + i;
    for (const ShardRun& run : (*held_)[static_cast<size_t>(seq_index)]) {
      if (run.begin <= i && i < run.end) return run.local + (i - run.begin);
    }
    return -1;
  }

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
      s.q_offsets[r] = q_token(seq_index, i) * p_.q.token_stride + b.head * p_.q.head_stride;
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
  const std::vector<std::vector<ShardRun>>* held_;
  float bar_;  // look, log2 units
};

// A head that its mask and the look would take past max_density runs dense without the look;
// after the look, one its dense rows take past it. Returns whether a sparse head is left.
bool apply_look_cost(const Problem& problem, SparsePlan* plan, bool with_rows) {
  bool any_sparse = false;
  for (size_t s = 0; s < problem.sequences.size(); ++s) {
    for (int h = 0; h < problem.num_q_heads; ++h) {
      HeadPlan& hp = plan->heads[s * problem.num_q_heads + h];
      if (hp.dense || (with_rows && hp.dense_rows.empty())) continue;
      if (look_runs_dense(problem, problem.sequences[s], hp)) {
        run_dense_look(problem.sequences[s], &hp);
      } else {
        any_sparse = true;
      }
    }
  }
  return any_sparse;
}

// The probe, then the other rows of the heads it sends on (core/mask.h, look_whole_head). `coll`:
// a sharded call's processes, over which the probe's counts are added and failures agreed on
// (null: one process).
Status look_passes(ThreadPool& pool, uint64_t pool_limit, Looker& looker, char* keys, SparsePlan* plan,
                   Collective* coll) {
  const size_t n = plan->heads.size();
  std::vector<int64_t> probe_rows(n, 0);
  std::vector<char> whole(n, 0);
  Status status = looker.pass(pool, pool_limit, keys, true, whole, &probe_rows);
  if (coll != nullptr) SAMPLEATTN_RETURN_IF_ERROR(agree(*coll, status, " in the look"));
  SAMPLEATTN_RETURN_IF_ERROR(status);
  std::vector<int64_t> counts(2 * n);
  for (size_t i = 0; i < n; ++i) {
    counts[i] = static_cast<int64_t>(plan->heads[i].dense_rows.size());
    counts[n + i] = probe_rows[i];
  }
  if (coll != nullptr) SAMPLEATTN_RETURN_IF_ERROR(coll->sum(counts.data(), static_cast<int64_t>(counts.size())));
  bool any = false;
  for (size_t i = 0; i < n; ++i) {
    whole[i] = !plan->heads[i].dense && look_whole_head(counts[i], counts[n + i]) ? 1 : 0;
    any = any || whole[i] != 0;
  }
  if (!any) return Status::ok();
  status = looker.pass(pool, pool_limit, keys, false, whole, nullptr);
  if (coll != nullptr) SAMPLEATTN_RETURN_IF_ERROR(agree(*coll, status, " in the look"));
  return status;
}

}  // namespace

Status find_dense_rows(ThreadPool& pool, uint64_t workspace_limit, const WorkspaceParts& during,
                       const KernelTable& kernels, const Problem& problem, SparsePlan* plan) {
  if (!(problem.sample.look > 0.f) || plan == nullptr) return Status::ok();
  const auto t0 = std::chrono::steady_clock::now();
  if (apply_look_cost(problem, plan, false)) {
    Looker looker(kernels, problem, plan);
    WorkspaceParts parts = during;
    parts.selection = WorkspaceParts::add(parts.selection, looker.key_bytes());
    SAMPLEATTN_RETURN_IF_ERROR(check_workspace(parts, workspace_limit, "during the look"));
    CallBuffers::Lease keys = pool.call_buffers().take(looker.key_bytes());
    if (!keys) return out_of_memory("the look's packed keys (" + std::to_string(looker.key_bytes()) + " bytes)");
    SAMPLEATTN_RETURN_IF_ERROR(look_passes(pool, parts.pool_limit(workspace_limit), looker, keys.get(), plan, nullptr));
    for (HeadPlan& hp : plan->heads) std::sort(hp.dense_rows.begin(), hp.dense_rows.end());
    // Then its dense rows count like the rest of the mask.
    apply_look_cost(problem, plan, true);
  }
  plan->time_selection_s += seconds_since(t0);
  return Status::ok();
}

Status find_dense_rows_sharded(ThreadPool& pool, uint64_t workspace_limit, const KernelTable& kernels,
                               const Problem& global, const ShardMap& map, Collective& coll, SparsePlan* plan) {
  if (!(global.sample.look > 0.f)) return Status::ok();
  const auto t0 = std::chrono::steady_clock::now();
  if (!apply_look_cost(global, plan, false)) {  // the same on every process: the plan is
    plan->time_selection_s += seconds_since(t0);
    return Status::ok();
  }
  const int me = coll.rank(), processes = coll.size();
  const size_t nseq = global.sequences.size();
  const int hkv = global.num_kv_heads, d = global.head_dim;
  // Every process's keys, all-gathered as the look's integers with their scales (look_quantize.h),
  // in position order from offset[s] for sequence s; a token's bytes: hkv rows of d int8, then hkv
  // f32 scales. Each process quantizes the rows it holds as the look's packs would (a sharded
  // call's K is f32, f16 or bf16: every table reads the same f32 values), and the look then reads
  // the gathered rows as an int8 cache: dequantized (v * s) and quantized again, which gives back
  // v and s exactly for every scale look_quantize makes from a largest magnitude between 1.5e-36
  // and FLT_MAX (s = amax / 127 rounded, then 127 s / 127 rounded, checked for every float amax;
  // below that, s is subnormal and a key's scores, all under 1e-34, may differ in their last
  // bits). So the one-process plan, at d + 4 bytes a key and kv head instead of d elements.
  const size_t ints = static_cast<size_t>(hkv) * static_cast<size_t>(d);
  const size_t row = ints + static_cast<size_t>(hkv) * sizeof(float);
  std::vector<int64_t> offset(nseq + 1, 0);
  for (size_t s = 0; s < nseq; ++s) offset[s + 1] = offset[s] + global.sequences[s].k_len;
  std::vector<int64_t> rows_of(static_cast<size_t>(processes), 0);
  for (int r = 0; r < processes; ++r) {
    for (const ShardRun& run : map.runs[static_cast<size_t>(r)]) rows_of[static_cast<size_t>(r)] += std::max<int64_t>(0, run.end - run.begin);
  }
  std::vector<std::vector<ShardRun>> held(nseq);
  for (const ShardRun& run : map.runs[static_cast<size_t>(me)]) {
    if (run.end > run.begin) held[static_cast<size_t>(run.seq)].push_back(run);
  }
  const size_t tokens = static_cast<size_t>(offset[nseq]);
  std::vector<char> received;
  std::vector<int8_t> all_k;
  std::vector<float> all_scales;
  Status local = Status::ok();
  const uint64_t gathered_bytes = static_cast<uint64_t>(tokens) * row;
  if (workspace_limit > 0 && 2 * gathered_bytes > workspace_limit) {
    local = out_of_memory("the look of a sharded call gathers every process's keys (" + std::to_string(2 * gathered_bytes) +
                          " bytes), past the workspace limit");
  }
  std::vector<char> send;
  if (local.is_ok()) {
    try {
      send.resize(static_cast<size_t>(rows_of[static_cast<size_t>(me)]) * row);
      received.resize(gathered_bytes);
      all_k.resize(tokens * ints);
      all_scales.resize(tokens * static_cast<size_t>(hkv));
    } catch (const std::bad_alloc&) {
      local = out_of_memory("out of memory while gathering the keys for the look of a sharded call");
    }
  }
  SAMPLEATTN_RETURN_IF_ERROR(agree(coll, local, " before the look"));
  {
    std::vector<float> values(static_cast<size_t>(d)), quantized(static_cast<size_t>(d));
    char* out = send.data();
    for (const ShardRun& run : map.runs[static_cast<size_t>(me)]) {
      for (int64_t p = run.begin; p < run.end; ++p, out += row) {
        for (int g = 0; g < hkv; ++g) {
          const int64_t at = global.kv.row(run.seq, run.local - run.begin, p, g).k;
          for (int c = 0; c < d; ++c) values[c] = load_scalar(global.k.data, global.k.dtype, at + c);
          const float scale = flash::look_quantize(values.data(), d, quantized.data());
          int8_t* to = reinterpret_cast<int8_t*>(out) + static_cast<size_t>(g) * d;
          for (int c = 0; c < d; ++c) to[c] = static_cast<int8_t>(quantized[c]);
          std::memcpy(out + ints + static_cast<size_t>(g) * sizeof(float), &scale, sizeof(float));
        }
      }
    }
  }
  std::vector<int64_t> bytes(static_cast<size_t>(processes));
  for (int r = 0; r < processes; ++r) bytes[static_cast<size_t>(r)] = rows_of[static_cast<size_t>(r)] * static_cast<int64_t>(row);
  SAMPLEATTN_RETURN_IF_ERROR(coll.all_gather(send.data(), received.data(), bytes.data()));
  std::vector<char>().swap(send);
  {
    const char* in = received.data();
    for (int r = 0; r < processes; ++r) {
      for (const ShardRun& run : map.runs[static_cast<size_t>(r)]) {
        for (int64_t p = run.begin; p < run.end; ++p, in += row) {
          const size_t t = static_cast<size_t>(offset[static_cast<size_t>(run.seq)] + p);
          std::memcpy(all_k.data() + t * ints, in, ints);
          std::memcpy(all_scales.data() + t * static_cast<size_t>(hkv), in + ints, static_cast<size_t>(hkv) * sizeof(float));
        }
      }
    }
  }
  std::vector<char>().swap(received);
  // The look over them: the keys packed, every sequence's from its offset; this process's rows.
  Problem all = global;
  all.k.data = all_k.data();
  all.k.dtype = DType::kI8;
  all.kv = KvLayout{};
  all.kv.k_token_stride = all.kv.v_token_stride = static_cast<int64_t>(ints);
  all.kv.k_head_stride = all.kv.v_head_stride = d;
  all.kv.k_scale = all_scales.data();
  all.kv.scale_token_stride = hkv;
  all.kv.scale_head_stride = 1;
  for (size_t s = 0; s < nseq; ++s) all.sequences[s].k_begin = offset[s];
  Looker looker(kernels, all, plan, &held);
  CallBuffers::Lease keys = pool.call_buffers().take(looker.key_bytes());
  SAMPLEATTN_RETURN_IF_ERROR(agree(coll, keys ? Status::ok() : out_of_memory("the look's packed keys"), " before the look"));
  SAMPLEATTN_RETURN_IF_ERROR(look_passes(pool, workspace_limit, looker, keys.get(), plan, &coll));
  // Every process's rows, gathered: the same lists everywhere.
  const size_t nheads = plan->heads.size();
  std::vector<int64_t> counts(static_cast<size_t>(processes) * nheads, 0);
  for (size_t i = 0; i < nheads; ++i) counts[static_cast<size_t>(me) * nheads + i] = static_cast<int64_t>(plan->heads[i].dense_rows.size());
  SAMPLEATTN_RETURN_IF_ERROR(coll.sum(counts.data(), static_cast<int64_t>(counts.size())));
  std::vector<int32_t> mine;
  for (const HeadPlan& hp : plan->heads) mine.insert(mine.end(), hp.dense_rows.begin(), hp.dense_rows.end());
  int64_t total = 0;
  for (int r = 0; r < processes; ++r) {
    int64_t n = 0;
    for (size_t i = 0; i < nheads; ++i) n += counts[static_cast<size_t>(r) * nheads + i];
    bytes[static_cast<size_t>(r)] = n * static_cast<int64_t>(sizeof(int32_t));
    total += n;
  }
  std::vector<int32_t> rows(static_cast<size_t>(total));
  SAMPLEATTN_RETURN_IF_ERROR(coll.all_gather(mine.data(), rows.data(), bytes.data()));
  for (HeadPlan& hp : plan->heads) hp.dense_rows.clear();
  size_t at = 0;
  for (int r = 0; r < processes; ++r) {
    for (size_t i = 0; i < nheads; ++i) {
      const size_t n = static_cast<size_t>(counts[static_cast<size_t>(r) * nheads + i]);
      plan->heads[i].dense_rows.insert(plan->heads[i].dense_rows.end(), rows.begin() + static_cast<int64_t>(at),
                                       rows.begin() + static_cast<int64_t>(at + n));
      at += n;
    }
  }
  for (HeadPlan& hp : plan->heads) std::sort(hp.dense_rows.begin(), hp.dense_rows.end());
  apply_look_cost(global, plan, true);
  plan->time_selection_s += seconds_since(t0);
  return Status::ok();
}

}  // namespace sampleattn::cpu
