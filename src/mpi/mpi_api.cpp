// The C entry points of libsampleattn_mpi (include/sampleattn/sampleattn_mpi.h): reading the
// caller's structs, the checks every rank must pass or fail together, then the ring.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "core/abi.h"
#include "core/enum_value.h"
#include "mpi/collective.h"
#include "mpi/ring_attention.h"
#include "mpi/shard_layout.h"
#include "mpi/sharded_sample.h"
#include "sampleattn/sampleattn_mpi.h"

namespace sampleattn::abi {
template <>
constexpr size_t min_size<sampleattn_mpi_shard>() {
  return offsetof(sampleattn_mpi_shard, length) + sizeof(sampleattn_mpi_shard::length);
}
template <>
constexpr size_t min_size<sampleattn_mpi_stats>() {
  return offsetof(sampleattn_mpi_stats, attention_calls) + sizeof(sampleattn_mpi_stats::attention_calls);
}
}  // namespace sampleattn::abi

namespace {

using sampleattn::Status;
namespace mpi = sampleattn::mpi;

thread_local std::string g_last_error;

sampleattn_mpi_shard default_shard() {
  sampleattn_mpi_shard s{};
  s.struct_size = sizeof(s);
  s.split = SAMPLEATTN_MPI_SPLIT_CONTIGUOUS;
  return s;
}

sampleattn_mpi_stats default_stats() {
  sampleattn_mpi_stats s{};
  s.struct_size = sizeof(s);
  return s;
}

sampleattn_params default_params() {
  sampleattn_params p;
  sampleattn_params_init(&p);
  return p;
}

// The sequence lengths of a self-attention batch (queries = keys), or why the call is not one.
Status sequence_lengths(const sampleattn_params& p, std::vector<int64_t>* lengths) {
  lengths->clear();
  if (p.batch < 1) return sampleattn::invalid_shape("batch is " + std::to_string(p.batch) + "; it must be >= 1");
  if (p.cu_seqlens_q == nullptr && p.cu_seqlens_k == nullptr) {
    if (p.batch != 1) return sampleattn::null_pointer("batch > 1 needs cu_seqlens_q and cu_seqlens_k");
    if (p.seqlen_q != p.seqlen_k) {
      return sampleattn::invalid_shape("seqlen_q (" + std::to_string(p.seqlen_q) + ") != seqlen_k (" +
                                       std::to_string(p.seqlen_k) +
                                       "): context-parallel prefill is self-attention, each sequence's queries are its keys");
    }
    lengths->push_back(p.seqlen_q);
    return Status::ok();
  }
  if (p.cu_seqlens_q == nullptr || p.cu_seqlens_k == nullptr) {
    return sampleattn::null_pointer(std::string(p.cu_seqlens_q == nullptr ? "cu_seqlens_q" : "cu_seqlens_k") +
                                    " is NULL while the other is set");
  }
  for (int b = 0; b <= p.batch; ++b) {
    if (p.cu_seqlens_q[b] != p.cu_seqlens_k[b]) {
      return sampleattn::invalid_shape("cu_seqlens_q[" + std::to_string(b) + "] != cu_seqlens_k[" + std::to_string(b) +
                                       "]: context-parallel prefill is self-attention, each sequence's queries are its keys");
    }
  }
  for (int b = 0; b < p.batch; ++b) lengths->push_back(static_cast<int64_t>(p.cu_seqlens_q[b + 1]) - p.cu_seqlens_q[b]);
  return Status::ok();
}

// What one rank can check alone: the pointers, the structs, what the MPI layer supports, and the
// whole call's shapes and parameters as libsampleattn checks them (sampleattn_plan on the global
// sequences; the local tensors' own extents are checked by each attention call).
Status check_local(sampleattn_context* context, const sampleattn_params* params, const sampleattn_mpi_shard* shard,
                   sampleattn_params* p, sampleattn_mpi_shard* s, std::vector<int64_t>* lengths, int* threads) {
  if (context == nullptr) return sampleattn::null_pointer("context is NULL");
  if (params == nullptr) return sampleattn::null_pointer("params is NULL");
  SAMPLEATTN_RETURN_IF_ERROR(sampleattn::abi::read(*params, "params", "sampleattn_params_init", default_params(), p));
  *s = default_shard();
  if (shard != nullptr) {
    SAMPLEATTN_RETURN_IF_ERROR(sampleattn::abi::read(*shard, "shard", "sampleattn_mpi_shard_init", default_shard(), s));
  }
  const int32_t split = sampleattn::enum_value(s->split);  // a C caller may store any int
  if (split != SAMPLEATTN_MPI_SPLIT_CONTIGUOUS && split != SAMPLEATTN_MPI_SPLIT_ZIGZAG) {
    return sampleattn::invalid_argument("shard.split is " + std::to_string(split) +
                                        "; it must be CONTIGUOUS (0) or ZIGZAG (1)");
  }
  if (s->split == SAMPLEATTN_MPI_SPLIT_ZIGZAG && (s->begin != nullptr || s->length != nullptr)) {
    return sampleattn::invalid_argument("shard.begin/length are for the CONTIGUOUS split; ZIGZAG's chunks are fixed");
  }
  sampleattn_context_info info;
  sampleattn_context_info_init(&info);
  if (sampleattn_context_get_info(context, &info) != SAMPLEATTN_SUCCESS) {
    return {SAMPLEATTN_INVALID_ARGUMENT, std::string("context: ") + sampleattn_last_error()};
  }
  if (info.backend != SAMPLEATTN_BACKEND_CPU) {
    return sampleattn::unsupported_backend("sampleattn_mpi_forward runs on CPU contexts (the ring's blocks are host memory)");
  }
  *threads = std::max(1, info.num_threads);
  if (sampleattn::enum_value(p->method) == SAMPLEATTN_METHOD_SAMPLE && p->causal == 0) {
    return sampleattn::invalid_argument("method sample over ranks is causal (SampleAttention's masks are)");
  }
  if (p->alibi_slopes != nullptr) {
    return sampleattn::invalid_argument("alibi_slopes are not supported by sampleattn_mpi_forward (the blocks' calls carry no positions)");
  }
  if (p->window_left >= 0) {
    return sampleattn::invalid_argument("window_left is not supported by sampleattn_mpi_forward (the blocks' calls carry no positions)");
  }
  if (p->kv_cache != nullptr) {
    return sampleattn::invalid_argument("kv_cache is not supported by sampleattn_mpi_forward: each rank's K/V are packed");
  }
  SAMPLEATTN_RETURN_IF_ERROR(sequence_lengths(*p, lengths));
  // The parameters, on the global sequences with packed tensors (the caller's strides are those
  // of the local tensors, checked by check_local_tensors).
  sampleattn_params global = *p;
  const int dv = p->head_dim_v == 0 ? p->head_dim : p->head_dim_v;
  global.q.token_stride = static_cast<int64_t>(p->num_q_heads) * p->head_dim;
  global.q.head_stride = p->head_dim;
  global.k.token_stride = static_cast<int64_t>(p->num_kv_heads) * p->head_dim;
  global.k.head_stride = p->head_dim;
  global.v.token_stride = static_cast<int64_t>(p->num_kv_heads) * dv;
  global.v.head_stride = dv;
  global.o.token_stride = static_cast<int64_t>(p->num_q_heads) * dv;
  global.o.head_stride = dv;
  sampleattn_plan_info plan;
  sampleattn_plan_info_init(&plan);
  const sampleattn_status planned = sampleattn_plan(context, &global, &plan);
  if (planned != SAMPLEATTN_SUCCESS) return {planned, sampleattn_last_error()};
  return Status::ok();
}

// This rank's tensors, with their strides, over the tokens it holds (one non-causal sequence of
// them: the extents and overlaps libsampleattn checks).
Status check_local_tensors(sampleattn_context* context, const sampleattn_params& p, int64_t tokens) {
  if (tokens == 0) return Status::ok();
  sampleattn_params local = p;
  local.batch = 1;
  local.cu_seqlens_q = local.cu_seqlens_k = nullptr;
  local.seqlen_q = local.seqlen_k = tokens;
  local.causal = 0;
  local.method = SAMPLEATTN_METHOD_DENSE;  // extents only: sample's own rules are the global call's
  local.sinks = nullptr;
  sampleattn_plan_info plan;
  sampleattn_plan_info_init(&plan);
  const sampleattn_status planned = sampleattn_plan(context, &local, &plan);
  if (planned != SAMPLEATTN_SUCCESS) {
    return {planned, std::string("this rank's tensors (") + std::to_string(tokens) + " tokens): " + sampleattn_last_error()};
  }
  return Status::ok();
}

int64_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

// The shapes and parameters every rank must share.
Status check_agreement(MPI_Comm comm, const sampleattn_params& p, const sampleattn_mpi_shard& s,
                       const std::vector<int64_t>& lengths) {
  // FNV-1a style hashes (unsigned: they wrap), compared as int64.
  uint64_t lengths_fnv = 1469598103934665603ULL;
  for (int64_t l : lengths) lengths_fnv = (lengths_fnv ^ static_cast<uint64_t>(l)) * 1099511628211ULL;
  uint64_t sinks_fnv = 0;
  if (p.sinks != nullptr) {
    for (int h = 0; h < p.num_q_heads; ++h) sinks_fnv = (sinks_fnv ^ static_cast<uint64_t>(float_bits(p.sinks[h]))) * 1099511628211ULL + 1;
  }
  // The sample parameters matter only to method sample, whose ranks must share them.
  uint64_t sample_fnv = 1469598103934665603ULL;
  if (p.method == SAMPLEATTN_METHOD_SAMPLE) {
    sampleattn_sample_params sp;
    sampleattn_sample_params_init(&sp);
    if (p.sample != nullptr) {
      const sampleattn_sample_params defaults = sp;
      SAMPLEATTN_RETURN_IF_ERROR(sampleattn::abi::read(*p.sample, "params.sample", "sampleattn_sample_params_init", defaults, &sp));
    }
    for (int64_t v : {float_bits(sp.alpha), float_bits(sp.r_row), float_bits(sp.r_w), int64_t{sp.min_window},
                      int64_t{sp.sample_block}, int64_t{sp.min_stripes}, int64_t{sp.max_stripes}, int64_t{sp.sink_tokens},
                      int64_t{sp.dense_below}, int64_t{sp.scope}, int64_t{sp.window_mass_counts}, float_bits(sp.max_density),
                      float_bits(sp.r_val), float_bits(sp.min_kept), float_bits(sp.max_lost), int64_t{sp.val_rows}}) {
      sample_fnv = (sample_fnv ^ static_cast<uint64_t>(v)) * 1099511628211ULL;
    }
  }
  const int64_t length_hash = static_cast<int64_t>(lengths_fnv), sink_hash = static_cast<int64_t>(sinks_fnv);
  const std::vector<int64_t> values = {p.batch, length_hash, p.num_q_heads, p.num_kv_heads, p.head_dim, p.head_dim_v,
                                       p.q.dtype, p.k.dtype, p.v.dtype, p.causal, p.precision,
                                       float_bits(p.softmax_scale), float_bits(p.softcap), sink_hash, s.split,
                                       s.begin != nullptr, p.method, static_cast<int64_t>(sample_fnv)};
  const std::vector<const char*> names = {"batch", "the sequence lengths", "num_q_heads", "num_kv_heads", "head_dim",
                                          "head_dim_v", "q.dtype", "k.dtype", "v.dtype", "causal", "precision",
                                          "softmax_scale", "softcap", "sinks", "shard.split",
                                          "whether shard runs are explicit", "method", "the sample parameters"};
  return mpi::check_same(comm, values, names);
}

Status forward_on(sampleattn_context* context, MPI_Comm comm, const sampleattn_params* params,
                  const sampleattn_mpi_shard* shard, sampleattn_mpi_stats* stats);

Status forward(sampleattn_context* context, MPI_Comm comm, const sampleattn_params* params,
               const sampleattn_mpi_shard* shard, sampleattn_mpi_stats* stats) {
  if (comm == MPI_COMM_NULL) return sampleattn::null_pointer("comm is MPI_COMM_NULL");
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (!initialized || finalized) return sampleattn::invalid_argument("MPI is not initialized (or already finalized)");
  // The call's own communicator: its messages never meet the application's on comm.
  MPI_Comm own = MPI_COMM_NULL;
  SAMPLEATTN_RETURN_IF_ERROR(mpi::mpi_status(MPI_Comm_dup(comm, &own), "MPI_Comm_dup"));
  const Status status = forward_on(context, own, params, shard, stats);
  MPI_Comm_free(&own);
  return status;
}

Status forward_on(sampleattn_context* context, MPI_Comm comm, const sampleattn_params* params,
                  const sampleattn_mpi_shard* shard, sampleattn_mpi_stats* stats) {
  mpi::RingCall call;
  call.context = context;
  call.comm = comm;
  SAMPLEATTN_RETURN_IF_ERROR(mpi::mpi_status(MPI_Comm_rank(comm, &call.rank), "MPI_Comm_rank"));
  SAMPLEATTN_RETURN_IF_ERROR(mpi::mpi_status(MPI_Comm_size(comm, &call.ranks), "MPI_Comm_size"));
  sampleattn_mpi_shard s;
  std::vector<int64_t> lengths;
  Status local = check_local(context, params, shard, &call.params, &s, &lengths, &call.threads);
  sampleattn_mpi_stats full = default_stats();
  if (local.is_ok() && stats != nullptr) {
    local = sampleattn::abi::read(*stats, "stats", "sampleattn_mpi_stats_init", default_stats(), &full);
  }
  SAMPLEATTN_RETURN_IF_ERROR(mpi::agree(comm, local));
  SAMPLEATTN_RETURN_IF_ERROR(mpi::agree(comm, check_agreement(comm, call.params, s, lengths)));
  const sampleattn_params& p = call.params;
  call.head_dim_v = p.head_dim_v == 0 ? p.head_dim : p.head_dim_v;

  // The runs of every rank: by the formula, or the explicit ones gathered.
  mpi::ShardLayout& layout = call.layout;
  layout.runs.resize(static_cast<size_t>(call.ranks));
  if (s.begin == nullptr) {
    for (int r = 0; r < call.ranks; ++r) layout.runs[static_cast<size_t>(r)] = mpi::formula_runs(s.split, lengths, r, call.ranks);
  } else {
    std::vector<mpi::Run> mine;
    SAMPLEATTN_RETURN_IF_ERROR(mpi::agree(comm, mpi::explicit_runs(s.begin, s.length, lengths, &mine)));
    const size_t batch = lengths.size();
    std::vector<int64_t> sent(2 * batch), all(2 * batch * static_cast<size_t>(call.ranks));
    for (size_t b = 0; b < batch; ++b) {
      sent[2 * b] = s.begin[b];
      sent[2 * b + 1] = s.length[b];
    }
    SAMPLEATTN_RETURN_IF_ERROR(mpi::mpi_status(MPI_Allgather(sent.data(), static_cast<int>(sent.size()), MPI_INT64_T,
                                                             all.data(), static_cast<int>(sent.size()), MPI_INT64_T, comm),
                                               "MPI_Allgather (shards)"));
    for (int r = 0; r < call.ranks; ++r) {
      const int64_t* row = all.data() + 2 * batch * static_cast<size_t>(r);
      std::vector<int64_t> begin(batch), length(batch);
      for (size_t b = 0; b < batch; ++b) {
        begin[b] = row[2 * b];
        length[b] = row[2 * b + 1];
      }
      SAMPLEATTN_RETURN_IF_ERROR(mpi::explicit_runs(begin.data(), length.data(), lengths, &layout.runs[static_cast<size_t>(r)]));
    }
  }
  layout.tokens.assign(static_cast<size_t>(call.ranks), 0);
  for (int r = 0; r < call.ranks; ++r) {
    for (const mpi::Run& run : layout.runs[static_cast<size_t>(r)]) layout.tokens[static_cast<size_t>(r)] += run.len;
  }
  // Every rank holds the same layout, so the verdict is the same everywhere.
  SAMPLEATTN_RETURN_IF_ERROR(mpi::check_cover(layout, lengths));
  SAMPLEATTN_RETURN_IF_ERROR(
      mpi::agree(comm, check_local_tensors(context, p, layout.tokens[static_cast<size_t>(call.rank)])));

  if (p.method == SAMPLEATTN_METHOD_SAMPLE) {
    SAMPLEATTN_RETURN_IF_ERROR(mpi::sharded_sample(call, stats != nullptr ? &full : nullptr));
  } else {
    SAMPLEATTN_RETURN_IF_ERROR(mpi::ring_attention(call, stats != nullptr ? &full : nullptr));
  }
  if (stats != nullptr) sampleattn::abi::write_back(full, stats);
  return Status::ok();
}

}  // namespace

extern "C" {

const char* sampleattn_mpi_last_error(void) { return g_last_error.c_str(); }

void sampleattn_mpi_shard_init_sized(sampleattn_mpi_shard* shard, size_t size) {
  sampleattn::abi::init(shard, size, default_shard());
}

void sampleattn_mpi_stats_init_sized(sampleattn_mpi_stats* stats, size_t size) {
  sampleattn::abi::init(stats, size, default_stats());
}

sampleattn_status sampleattn_mpi_forward(sampleattn_context* context, MPI_Comm comm, const sampleattn_params* params,
                                         const sampleattn_mpi_shard* shard, sampleattn_mpi_stats* stats) {
  Status status;
  try {
    status = forward(context, comm, params, shard, stats);
  } catch (const std::bad_alloc&) {
    status = sampleattn::out_of_memory("out of memory in sampleattn_mpi_forward");
  } catch (const std::exception& e) {
    status = sampleattn::internal_error(std::string("sampleattn_mpi_forward: ") + e.what());
  } catch (...) {
    status = sampleattn::internal_error("sampleattn_mpi_forward: unknown exception");
  }
  g_last_error = status.is_ok() ? std::string() : status.message();
  return status.code();
}

}  // extern "C"
