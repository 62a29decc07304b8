#include "cpu/sharded_attention.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "core/mask.h"
#include "cpu/cgroup_limits.h"
#include "cpu/flash_driver.h"
#include "cpu/sampling.h"
#include "cpu/workspace.h"

namespace sampleattn::cpu {
namespace {

std::string str(int64_t v) { return std::to_string(v); }

// Key positions [begin, end) of one sequence.
struct Span {
  int64_t begin;
  int64_t end;
};

// Positions [begin, end) of a sequence's kv head that one process reads from another, whose tokens
// hold them from `local` on.
struct Piece {
  int seq;
  int kv_head;
  int64_t begin;
  int64_t end;
  int64_t local;
};

// Sorts spans and joins those that overlap or touch.
void merge(std::vector<Span>* spans) {
  std::sort(spans->begin(), spans->end(), [](const Span& a, const Span& b) { return a.begin < b.begin; });
  size_t kept = 0;
  for (const Span& s : *spans) {
    if (s.begin >= s.end) continue;
    if (kept > 0 && s.begin <= (*spans)[kept - 1].end) {
      (*spans)[kept - 1].end = std::max((*spans)[kept - 1].end, s.end);
    } else {
      (*spans)[kept++] = s;
    }
  }
  spans->resize(kept);
}

// What the sharded attention takes (sharded_attention.h), and a map that puts every position of
// every sequence on exactly one process: a key nobody holds would be read as the zero row.
Status check_call(const Problem& global, const ShardMap& map, const SparsePlan& plan, const Collective& coll) {
  if (map.processes() != coll.size() || coll.rank() < 0 || coll.rank() >= coll.size()) {
    return invalid_argument("the shard map has " + str(map.processes()) + " processes, the collective " +
                            str(coll.size()) + " (this one rank " + str(coll.rank()) + ")");
  }
  if (!global.causal) return invalid_argument("the sharded attention is causal");
  if (global.window_left >= 0) return invalid_argument("the sharded attention takes no model window (window_left)");
  if (!global.alibi_slopes.empty()) return invalid_argument("the sharded attention takes no ALiBi slopes");
  if (global.paged() || dtype_quantized(global.k.dtype) || dtype_quantized(global.v.dtype) ||
      global.kv.k_scale != nullptr || global.kv.v_scale != nullptr) {
    return invalid_argument("the sharded attention takes packed K/V that is not quantized");
  }
  const size_t nseq = global.sequences.size();
  if (plan.heads.size() != nseq * static_cast<size_t>(global.num_q_heads)) {
    return internal_error("the plan has " + str(static_cast<int64_t>(plan.heads.size())) + " heads for " +
                          str(static_cast<int64_t>(nseq)) + " sequences of " + str(global.num_q_heads));
  }
  for (size_t s = 0; s < nseq; ++s) {
    const Sequence& seq = global.sequences[s];
    if (seq.q_len != seq.k_len) {
      return invalid_argument("sequence " + str(static_cast<int64_t>(s)) + " of a sharded call has " + str(seq.q_len) +
                              " queries for " + str(seq.k_len) + " keys (a sharded call is a whole prefill)");
    }
  }
  std::vector<std::vector<Span>> covered(nseq);
  for (int r = 0; r < map.processes(); ++r) {
    const std::vector<ShardRun>& runs = map.runs[static_cast<size_t>(r)];
    for (size_t i = 0; i < runs.size(); ++i) {
      const ShardRun& run = runs[i];
      if (run.seq < 0 || static_cast<size_t>(run.seq) >= nseq || run.begin < 0 || run.end < run.begin ||
          run.end > global.sequences[static_cast<size_t>(run.seq)].k_len || run.local < 0) {
        return invalid_argument("run " + str(static_cast<int64_t>(i)) + " of process " + str(r) + " (sequence " +
                                str(run.seq) + ", positions " + str(run.begin) + ".." + str(run.end) + ", token " +
                                str(run.local) + ") is outside the batch");
      }
      if (run.end > run.begin) covered[static_cast<size_t>(run.seq)].push_back({run.begin, run.end});
    }
  }
  for (size_t s = 0; s < nseq; ++s) {
    std::vector<Span>& spans = covered[s];
    std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) { return a.begin < b.begin; });
    int64_t next = 0;
    for (const Span& span : spans) {
      if (span.begin != next) break;
      next = span.end;
    }
    if (next != global.sequences[s].k_len) {
      return invalid_argument("the shard map does not hold every position of sequence " + str(static_cast<int64_t>(s)) +
                              " exactly once (position " + str(next) + ")");
    }
  }
  return Status::ok();
}

// Indices into each head's stripe list [seq * num_q_heads + head], ascending: those of the keys a
// process holds. A process sends only its own keys, so it looks only at these stripes when it
// works out what the others read (a share of every list, not every list once per reader).
using StripeIndices = std::vector<std::vector<int64_t>>;

StripeIndices held_stripes(const Problem& global, const SparsePlan& plan, const std::vector<std::vector<ShardRun>>& held) {
  const int hq = global.num_q_heads;
  StripeIndices indices(global.sequences.size() * static_cast<size_t>(hq));
  for (size_t s = 0; s < held.size(); ++s) {
    const std::vector<ShardRun>& runs = held[s];
    for (int h = 0; h < hq && !runs.empty(); ++h) {
      const HeadPlan& hp = plan.head(static_cast<int>(s), h, hq);
      if (hp.dense) continue;
      std::vector<int64_t>& out = indices[s * hq + h];
      size_t b = 0;
      for (size_t i = 0; i < hp.stripes.size(); ++i) {
        while (b < runs.size() && runs[b].end <= hp.stripes[i]) ++b;
        if (b == runs.size()) break;
        if (runs[b].begin <= hp.stripes[i]) out.push_back(static_cast<int64_t>(i));
      }
    }
  }
  return indices;
}

// The keys the runs of one process read, per (sequence, kv head) [seq * num_kv_heads + kv head]:
// ascending, disjoint spans. As the flash driver reads them (core/mask.h): a group with a dense
// head, every key its rows see; a sparse group, the window band of its rows (at the widest window
// among its heads: the driver takes one head's for all) and every head's stripes visible to some
// row of the process's runs in the sequence (`only`: just those indices, else all). Without a
// model window a query sees a prefix of the ascending list that grows with its position, so the
// last query of the process's runs sees every stripe any of them sees.
std::vector<std::vector<Span>> keys_read(const Problem& global, const SparsePlan& plan, const std::vector<ShardRun>& runs,
                                         const StripeIndices* only) {
  const int hq = global.num_q_heads, hkv = global.num_kv_heads, group = global.group;
  const int64_t left = global.window_left;
  const size_t nseq = global.sequences.size();
  std::vector<std::vector<Span>> keys(nseq * static_cast<size_t>(hkv));
  std::vector<int64_t> first(nseq, std::numeric_limits<int64_t>::max()), last(nseq, -1);  // query positions here
  for (const ShardRun& run : runs) {
    if (run.end <= run.begin) continue;
    const size_t s = static_cast<size_t>(run.seq);
    first[s] = std::min(first[s], run.begin);
    last[s] = std::max(last[s], run.end - 1);
    for (int g = 0; g < hkv; ++g) {
      bool dense = false;
      int64_t window = 0;
      for (int h = g * group; h < (g + 1) * group; ++h) {
        const HeadPlan& hp = plan.head(run.seq, h, hq);
        dense = dense || hp.dense;
        window = std::max(window, hp.window);
      }
      const bool sparse = !dense;
      keys[s * hkv + g].push_back({own_keys_lo(sparse, run.begin, window, left),
                                   own_keys_hi(sparse, true, run.end - 1, run.end)});
      // A sparse group's dense rows (the look's) here read every key they see.
      int64_t last_dense = -1;
      for (int h = g * group; sparse && h < (g + 1) * group; ++h) {
        const std::vector<int32_t>& rows = plan.head(run.seq, h, hq).dense_rows;
        auto it = std::lower_bound(rows.begin(), rows.end(), static_cast<int32_t>(run.end));
        if (it != rows.begin() && *(it - 1) >= run.begin) last_dense = std::max<int64_t>(last_dense, *(it - 1));
      }
      if (last_dense >= 0) keys[s * hkv + g].push_back({model_lo(last_dense, left), last_dense + 1});
    }
  }
  for (size_t s = 0; s < nseq; ++s) {
    if (last[s] < 0) continue;
    for (int g = 0; g < hkv; ++g) {
      bool dense = false;
      for (int h = g * group; h < (g + 1) * group; ++h) dense = dense || plan.head(static_cast<int>(s), h, hq).dense;
      if (dense) continue;  // the group reads every key before its rows
      const HeadPlan* previous = nullptr;
      for (int h = g * group; h < (g + 1) * group; ++h) {
        const HeadPlan& hp = plan.head(static_cast<int>(s), h, hq);
        // The heads of a group that share their stripes (a kv-group scope) add them once.
        if (previous != nullptr && previous->window == hp.window && previous->stripes == hp.stripes) continue;
        previous = &hp;
        std::vector<Span>& spans = keys[s * hkv + g];
        const int64_t from = visible_stripes(hp, first[s], left).begin, to = visible_stripes(hp, last[s], left).end;
        const auto add = [&](int64_t i) { spans.push_back({hp.stripes[i], int64_t{hp.stripes[i]} + 1}); };
        if (only == nullptr) {
          for (int64_t i = from; i < to; ++i) add(i);
          continue;
        }
        for (int64_t i : (*only)[s * hq + h]) {
          if (i >= to) break;
          if (i >= from) add(i);
        }
      }
    }
  }
  for (std::vector<Span>& spans : keys) merge(&spans);
  return keys;
}

// Appends the parts of `keys` (keys_read of a reader) that a holder's runs `held` ([sequence]:
// its non-empty runs, by position) cover, in the exchange's order: sequence, kv head, position.
void append_pieces(const std::vector<std::vector<Span>>& keys, const std::vector<std::vector<ShardRun>>& held,
                   int hkv, std::vector<Piece>* out) {
  for (size_t s = 0; s < held.size(); ++s) {
    const std::vector<ShardRun>& runs = held[s];
    for (int g = 0; g < hkv; ++g) {
      const std::vector<Span>& spans = keys[s * hkv + g];
      for (size_t a = 0, b = 0; a < spans.size() && b < runs.size();) {
        const int64_t lo = std::max(spans[a].begin, runs[b].begin), hi = std::min(spans[a].end, runs[b].end);
        if (lo < hi) out->push_back({static_cast<int>(s), g, lo, hi, runs[b].local + (lo - runs[b].begin)});
        if (spans[a].end < runs[b].end) {
          ++a;
        } else {
          ++b;
        }
      }
    }
  }
}

int64_t rows_of(const std::vector<Piece>& pieces, size_t from, size_t to) {
  int64_t rows = 0;
  for (size_t i = from; i < to; ++i) rows += pieces[i].end - pieces[i].begin;
  return rows;
}

struct FreeBytes {
  void operator()(char* p) const { delete[] p; }
};
using Bytes = std::unique_ptr<char[], FreeBytes>;

// Bytes that need not be zeroed (a std::vector's would be), or null when they cannot be had
// (past the memory ceiling too: aligned_buffer.h).
Bytes allocate(uint64_t bytes) {
  if (!fits_memory_ceiling(bytes)) return nullptr;
  return Bytes(new (std::nothrow) char[bytes]);
}

// One process's side of the exchange and the problem its runs attend in. The rows it receives are
// records of K then V (each record one kv head's row of one position, the gathered rows in rank
// order after a zero record), so the receive buffer is the cache itself: K and V are paged with a
// page size of 1 through per-(run, kv head) tables (core/kv_cache.h), position -> record. A key
// nobody sent (before a band's start, in a tile whose mask drops it) maps to the zero record,
// finite for the kernels.
class Exchange {
 public:
  Exchange(const Problem& global, const ShardMap& map, const SparsePlan& plan, int rank)
      : global_(global), map_(map), plan_(plan), me_(rank) {}

  // Everything before the exchange: what goes where, the tables, the run problem and plan, the
  // buffers (checked against the limit first) and the rows this process sends.
  Status prepare(ThreadPool& pool, uint64_t workspace_limit, const KernelTable& kernels) {
    const int processes = map_.processes(), hkv = global_.num_kv_heads;
    const size_t nseq = global_.sequences.size();
    std::vector<std::vector<std::vector<ShardRun>>> held(static_cast<size_t>(processes),
                                                         std::vector<std::vector<ShardRun>>(nseq));
    for (int r = 0; r < processes; ++r) {
      for (const ShardRun& run : map_.runs[static_cast<size_t>(r)]) {
        if (run.end > run.begin) held[static_cast<size_t>(r)][static_cast<size_t>(run.seq)].push_back(run);
      }
      for (std::vector<ShardRun>& runs : held[static_cast<size_t>(r)]) {
        std::sort(runs.begin(), runs.end(), [](const ShardRun& a, const ShardRun& b) { return a.begin < b.begin; });
      }
    }
    // What each process reads from this one, and what this one reads from each: the same lists
    // on both sides, so only row data travels.
    send_bytes_.assign(static_cast<size_t>(processes), 0);
    recv_bytes_.assign(static_cast<size_t>(processes), 0);
    std::vector<Piece> to_send, to_receive;
    std::vector<int64_t> rows_to(static_cast<size_t>(processes)), rows_from(static_cast<size_t>(processes));
    const StripeIndices mine = held_stripes(global_, plan_, held[static_cast<size_t>(me_)]);
    for (int d = 0; d < processes; ++d) {
      const std::vector<std::vector<Span>> keys =
          keys_read(global_, plan_, map_.runs[static_cast<size_t>(d)], d == me_ ? nullptr : &mine);
      const size_t at = to_send.size();
      append_pieces(keys, held[static_cast<size_t>(me_)], hkv, &to_send);
      rows_to[static_cast<size_t>(d)] = rows_of(to_send, at, to_send.size());
      if (d != me_) continue;
      for (int s = 0; s < processes; ++s) {
        const size_t from = to_receive.size();
        append_pieces(keys, held[static_cast<size_t>(s)], hkv, &to_receive);
        rows_from[static_cast<size_t>(s)] = rows_of(to_receive, from, to_receive.size());
      }
    }

    // A record: the K row, then the V row at a multiple of 4 bytes, so that both strides are whole
    // elements of either dtype.
    const int k_size = dtype_size(global_.k.dtype), v_size = dtype_size(global_.v.dtype);
    k_row_bytes_ = static_cast<int64_t>(global_.head_dim) * k_size;
    v_row_bytes_ = static_cast<int64_t>(global_.head_dim_v) * v_size;
    v_offset_ = (k_row_bytes_ + 3) / 4 * 4;
    record_ = v_offset_ + (v_row_bytes_ + 3) / 4 * 4;
    int64_t received = 0, sent = 0;
    for (int r = 0; r < processes; ++r) {
      send_bytes_[static_cast<size_t>(r)] = rows_to[static_cast<size_t>(r)] * record_;
      recv_bytes_[static_cast<size_t>(r)] = rows_from[static_cast<size_t>(r)] * record_;
      sent += rows_to[static_cast<size_t>(r)];
      received += rows_from[static_cast<size_t>(r)];
    }
    if (received >= std::numeric_limits<int32_t>::max()) {
      return invalid_shape("a process of the sharded call would gather " + str(received) +
                           " K/V rows, more than its tables index (2^31 - 2)");
    }

    // The run problem: one sequence per run of this process (queries the run, keys every position
    // before its end), its output rows at the run's own tokens.
    run_ = global_;
    run_.sequences.clear();
    std::vector<std::vector<int>> runs_of(nseq);  // [sequence]: its runs here, as run_ sequences
    int64_t longest = 1, local_tokens = 0;
    for (const ShardRun& r : map_.runs[static_cast<size_t>(me_)]) {
      if (r.end <= r.begin) continue;
      runs_of[static_cast<size_t>(r.seq)].push_back(static_cast<int>(run_.sequences.size()));
      Sequence seq;
      seq.q_begin = r.local;
      seq.q_len = r.end - r.begin;
      seq.k_begin = 0;  // unused: paged
      seq.k_len = r.end;
      run_.sequences.push_back(seq);
      run_of_.push_back(r);
      longest = std::max(longest, r.end);
      local_tokens = std::max(local_tokens, r.local + seq.q_len);
    }
    run_.total_q = local_tokens;
    run_.total_k = received + 1;
    const int64_t table_entries = static_cast<int64_t>(run_.sequences.size()) * hkv * longest;
    KvLayout& kv = run_.kv;
    kv = KvLayout{};
    kv.k_page_stride = kv.k_token_stride = record_ / k_size;
    kv.v_page_stride = kv.v_token_stride = record_ / v_size;
    kv.table_head_stride = longest;
    kv.table_stride = hkv * longest;
    kv.page_size = 1;
    kv.num_pages = static_cast<int32_t>(received + 1);

    // The plan of the runs: each run's heads as the call's, their stripe lists cut after the last
    // one the run's last query sees. No query of the run sees the rest, and the driver packs every
    // stripe of a list: those at or past the run's end would be read outside its tables.
    const int hq = global_.num_q_heads;
    uint64_t stripe_entries = 0;
    for (const ShardRun& r : run_of_) {
      for (int h = 0; h < hq; ++h) {
        const HeadPlan& hp = plan_.head(r.seq, h, hq);
        if (!hp.dense) stripe_entries += static_cast<uint64_t>(visible_stripes(hp, r.end - 1, global_.window_left).end);
      }
    }

    // The memory: the exchange's buffers and tables beside the attention's parts, checked before
    // any of them is allocated. The rows sent are freed before the attention.
    const int threads = pool.num_threads();
    const uint64_t records_in = static_cast<uint64_t>(received + 1) * static_cast<uint64_t>(record_);
    const uint64_t records_out = static_cast<uint64_t>(sent) * static_cast<uint64_t>(record_);
    const uint64_t tables = static_cast<uint64_t>(table_entries) * sizeof(int32_t);
    const uint64_t lists = (to_send.capacity() + to_receive.capacity()) * sizeof(Piece);
    during_ = WorkspaceParts{};
    during_.pool_scratch = ThreadPool::scratch_footprint(flash_scratch_bytes(kernels, run_)) * static_cast<uint64_t>(threads);
    during_.attention = flash_bookkeeping_bytes(kernels, run_, threads);
    during_.sparse_plan = run_of_.size() * static_cast<uint64_t>(hq) * sizeof(HeadPlan) + stripe_entries * sizeof(int32_t);
    during_.kv_exchange = records_in + records_out + tables + lists;
    SAMPLEATTN_RETURN_IF_ERROR(check_workspace(during_, workspace_limit, "during the K/V exchange"));
    during_.kv_exchange = records_in + tables;

    run_plan_.heads.resize(run_of_.size() * static_cast<size_t>(hq));
    for (size_t i = 0; i < run_of_.size(); ++i) {
      const ShardRun& r = run_of_[i];
      for (int h = 0; h < hq; ++h) {
        const HeadPlan& hp = plan_.head(r.seq, h, hq);
        HeadPlan& to = run_plan_.heads[i * hq + h];
        to.dense = hp.dense;
        to.window = hp.window;
        to.decision = hp.decision;
        if (hp.dense) continue;
        const int64_t seen = visible_stripes(hp, r.end - 1, global_.window_left).end;
        to.stripes.assign(hp.stripes.begin(), hp.stripes.begin() + seen);
        // The look's dense rows of the run, as rows of the run sequence (its q_offset is r.begin).
        for (auto it = std::lower_bound(hp.dense_rows.begin(), hp.dense_rows.end(), static_cast<int32_t>(r.begin));
             it != hp.dense_rows.end() && *it < r.end; ++it) {
          to.dense_rows.push_back(static_cast<int32_t>(*it - r.begin));
        }
      }
    }

    // Tables: each received row at its position in the tables of every run of its sequence that
    // sees it (0, the zero record, elsewhere).
    tables_.assign(static_cast<size_t>(table_entries), 0);
    int64_t row = 1;
    for (const Piece& p : to_receive) {
      for (int i : runs_of[static_cast<size_t>(p.seq)]) {
        int32_t* table = tables_.data() + i * kv.table_stride + p.kv_head * kv.table_head_stride;
        const int64_t end = std::min(p.end, run_.sequences[static_cast<size_t>(i)].k_len);
        for (int64_t j = p.begin; j < end; ++j) table[j] = static_cast<int32_t>(row + (j - p.begin));
      }
      row += p.end - p.begin;
    }
    kv.block_table = tables_.data();

    received_ = allocate(records_in);
    sending_ = allocate(std::max<uint64_t>(records_out, 1));
    if (!received_ || !sending_) {
      return out_of_memory("cannot allocate " + str(static_cast<int64_t>(records_in + records_out)) +
                           " bytes of K/V rows for the exchange of a sharded call");
    }
    std::memset(received_.get(), 0, static_cast<size_t>(record_));
    run_.k.data = received_.get();
    run_.v.data = received_.get() + v_offset_;
    run_.k.token_stride = kv.k_page_stride;
    run_.v.token_stride = kv.v_page_stride;
    run_.k.head_stride = run_.v.head_stride = 0;

    // The rows this process holds for each reader, in rank order, each through the one addressing
    // rule (its run's tokens start at local - begin).
    char* out = sending_.get();
    const char* k = static_cast<const char*>(global_.k.data);
    const char* v = static_cast<const char*>(global_.v.data);
    for (const Piece& p : to_send) {
      for (int64_t j = p.begin; j < p.end; ++j, out += record_) {
        const KvRow at = global_.kv.row(p.seq, p.local - p.begin, j, p.kv_head);
        std::memcpy(out, k + at.k * k_size, static_cast<size_t>(k_row_bytes_));
        std::memset(out + k_row_bytes_, 0, static_cast<size_t>(v_offset_ - k_row_bytes_));
        std::memcpy(out + v_offset_, v + at.v * v_size, static_cast<size_t>(v_row_bytes_));
        std::memset(out + v_offset_ + v_row_bytes_, 0, static_cast<size_t>(record_ - v_offset_ - v_row_bytes_));
      }
    }
    return Status::ok();
  }

  Status exchange(Collective& coll) {
    SAMPLEATTN_RETURN_IF_ERROR(coll.all_to_all(sending_.get(), send_bytes_.data(), received_.get() + record_,
                                               recv_bytes_.data(), Collective::Payload::kKvRows));
    sending_.reset();
    return Status::ok();
  }

  Status attend(ThreadPool& pool, uint64_t workspace_limit, const KernelTable& kernels) const {
    if (run_.sequences.empty()) return Status::ok();
    bool kv_unchecked = false;
    SAMPLEATTN_RETURN_IF_ERROR(
        run_flash_attention(pool, workspace_limit, during_, kernels, run_, &run_plan_, nullptr, &kv_unchecked));
    // Without a bounds check only a non-finite value read by the decode kernel says this, and the
    // run problem's per-head tables keep its runs off the decode kernel (decode_streams).
    if (kv_unchecked) return internal_error("the sharded attention read a non-finite K/V value in the decode kernel");
    return Status::ok();
  }

 private:
  const Problem& global_;
  const ShardMap& map_;
  const SparsePlan& plan_;
  int me_;
  std::vector<int64_t> send_bytes_, recv_bytes_;
  int64_t k_row_bytes_ = 0, v_row_bytes_ = 0, v_offset_ = 0, record_ = 0;
  Problem run_;
  std::vector<ShardRun> run_of_;  // [run_ sequence]: its run
  SparsePlan run_plan_;
  std::vector<int32_t> tables_;
  Bytes received_, sending_;
  WorkspaceParts during_;
};

}  // namespace

Status sharded_attention(ThreadPool& pool, uint64_t workspace_limit, const KernelTable& kernels, const Problem& global,
                         const ShardMap& map, const SparsePlan& plan, Collective& coll) {
  Exchange exchange(global, map, plan, coll.rank());
  Status local;
  try {
    local = check_call(global, map, plan, coll);
    if (local.is_ok()) local = exchange.prepare(pool, workspace_limit, kernels);
  } catch (const std::bad_alloc&) {
    local = out_of_memory("out of memory while preparing the K/V exchange of a sharded call");
  }
  SAMPLEATTN_RETURN_IF_ERROR(agree(coll, local, " before the K/V exchange"));
  SAMPLEATTN_RETURN_IF_ERROR(exchange.exchange(coll));
  return exchange.attend(pool, workspace_limit, kernels);
}

}  // namespace sampleattn::cpu
