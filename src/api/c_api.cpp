// C entry points: argument checks, the backend table, and the translation of internal Status
// values into return codes plus a per-thread message. Nothing here prints, aborts or throws.
#include <algorithm>
#include <cmath>
#include <exception>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "core/abi.h"
#include "core/backend.h"
#include "core/enum_value.h"
#include "core/problem.h"
#include "core/status.h"
#include "api/host_report.h"
#include "api/sharded_api.h"
#include "sampleattn/sampleattn.h"

struct sampleattn_context {
  std::unique_ptr<sampleattn::Backend> backend;
  std::string note;      // why AUTO chose what it chose
  std::string backends;  // each backend: in use, available, or why not
  sampleattn_binding binding = SAMPLEATTN_BIND_CORES;
};

namespace {

using sampleattn::Status;

thread_local std::string g_last_error;

sampleattn_status report(const Status& status) {
  if (status.is_ok()) {
    g_last_error.clear();
  } else {
    g_last_error = status.message();
  }
  return status.code();
}

// Runs fn, mapping exceptions (a bug or an allocation failure) to a status.
template <typename F>
sampleattn_status guarded(F&& fn) {
  try {
    return report(fn());
  } catch (const std::bad_alloc&) {
    return report(sampleattn::out_of_memory("out of memory"));
  } catch (const std::exception& e) {
    return report(sampleattn::internal_error(std::string("unexpected exception: ") + e.what()));
  } catch (...) {
    return report(sampleattn::internal_error("unexpected exception"));
  }
}

// The caller's collective callbacks (api/sharded_api.h) as a core/collective.h.
class CallbackCollective final : public sampleattn::Collective {
 public:
  explicit CallbackCollective(const sampleattn_private_collective& c) : c_(c) {}
  int rank() const override { return c_.rank; }
  int size() const override { return c_.size; }
  Status sum(int64_t* values, int64_t n) override { return done(c_.sum_i64(c_.state, values, n, &error_), "sum"); }
  Status sum(double* values, int64_t n) override { return done(c_.sum_f64(c_.state, values, n, &error_), "sum"); }
  Status max(float* values, int64_t n) override { return done(c_.max_f32(c_.state, values, n, &error_), "max"); }
  Status all_gather(const void* send, void* recv, const int64_t* recv_bytes) override {
    return done(c_.all_gather(c_.state, send, recv, recv_bytes, &error_), "all_gather");
  }
  Status all_to_all(const void* send, const int64_t* send_bytes, void* recv, const int64_t* recv_bytes,
                    Payload what) override {
    const int32_t payload = what == Payload::kQueryRows ? SAMPLEATTN_PRIVATE_QUERY_ROWS : SAMPLEATTN_PRIVATE_KV_ROWS;
    return done(c_.all_to_all(c_.state, send, send_bytes, recv, recv_bytes, payload, &error_), "all_to_all");
  }

 private:
  Status done(sampleattn_status code, const char* what) {
    if (code == SAMPLEATTN_SUCCESS) return Status::ok();
    return {code, std::string("the sharded call's ") + what + " failed: " + (error_ != nullptr ? error_ : "no message")};
  }
  sampleattn_private_collective c_;
  const char* error_ = nullptr;
};

// The runs of a sharded call as a shard map, checked: every position of every sequence held by
// exactly one process.
Status shard_map(const sampleattn::Problem& problem, const sampleattn_private_run* runs, int64_t num_runs, int processes,
                 sampleattn::ShardMap* map) {
  if (num_runs < 0) return sampleattn::invalid_argument("num_runs is " + std::to_string(num_runs));
  if (num_runs > 0 && runs == nullptr) return sampleattn::null_pointer("runs is NULL");
  map->runs.assign(static_cast<size_t>(processes), {});
  const size_t batch = problem.sequences.size();
  std::vector<std::vector<std::pair<int64_t, int64_t>>> pieces(batch);
  for (int64_t i = 0; i < num_runs; ++i) {
    const sampleattn_private_run& r = runs[i];
    const std::string name = "runs[" + std::to_string(i) + "]";
    if (r.process < 0 || r.process >= processes) {
      return sampleattn::invalid_argument(name + ".process is " + std::to_string(r.process) + " of " + std::to_string(processes));
    }
    if (r.seq < 0 || static_cast<size_t>(r.seq) >= batch) return sampleattn::invalid_argument(name + ".seq is " + std::to_string(r.seq));
    const int64_t len = problem.sequences[static_cast<size_t>(r.seq)].k_len;
    if (r.begin < 0 || r.end < r.begin || r.end > len || r.local < 0) {
      return sampleattn::invalid_shape(name + " is [" + std::to_string(r.begin) + ", " + std::to_string(r.end) + ") at token " +
                                       std::to_string(r.local) + ", outside its sequence's " + std::to_string(len) + " positions");
    }
    if (r.end == r.begin) continue;
    map->runs[static_cast<size_t>(r.process)].push_back({r.seq, r.begin, r.end, r.local});
    pieces[static_cast<size_t>(r.seq)].push_back({r.begin, r.end});
  }
  for (size_t b = 0; b < batch; ++b) {
    std::sort(pieces[b].begin(), pieces[b].end());
    int64_t covered = 0;
    for (auto [begin, end] : pieces[b]) {
      if (begin != covered) break;
      covered = end;
    }
    if (covered != problem.sequences[b].k_len) {
      return sampleattn::invalid_shape("the runs do not hold every position of sequence " + std::to_string(b) +
                                       " exactly once (from position " + std::to_string(covered) + ")");
    }
  }
  return Status::ok();
}

Status check_options(const sampleattn_context_options& o) {
  const int32_t backend = sampleattn::enum_value(o.backend);
  if (backend != SAMPLEATTN_BACKEND_AUTO && backend != SAMPLEATTN_BACKEND_CPU &&
      backend != SAMPLEATTN_BACKEND_CUDA) {
    return sampleattn::invalid_argument("options.backend " + std::to_string(backend) +
                                        " is not a sampleattn_backend");
  }
  if (o.num_threads < 0) {
    return sampleattn::invalid_argument("options.num_threads must be >= 0 (0 = one per core)");
  }
  if (o.parallel_for != nullptr && o.num_threads == 0) {
    return sampleattn::invalid_argument(
        "options.num_threads must be the host pool's thread count (> 0) when options.parallel_for is set");
  }
  const int32_t binding = sampleattn::enum_value(o.binding);
  if (binding != SAMPLEATTN_BIND_CORES && binding != SAMPLEATTN_BIND_NONE) {
    return sampleattn::invalid_argument("options.binding " + std::to_string(binding) +
                                        " is not a sampleattn_binding");
  }
  if (o.cuda_device < 0) return sampleattn::invalid_argument("options.cuda_device must be >= 0");
  return Status::ok();
}

// The documented defaults of each struct, at the library's full size.
sampleattn_context_options default_options() {
  sampleattn_context_options o{};
  o.struct_size = sizeof(o);
  o.backend = SAMPLEATTN_BACKEND_AUTO;
  o.num_threads = 0;
  o.binding = SAMPLEATTN_BIND_CORES;
  o.cuda_device = 0;
  o.max_workspace_bytes = 0;
  o.parallel_for = nullptr;
  o.host_pool = nullptr;
  return o;
}

sampleattn_context_info default_info() {
  sampleattn_context_info i{};
  i.struct_size = sizeof(i);
  i.isa = i.device_name = i.note = i.cpu_model = i.cpu_tables = i.backends = i.environment = "";
  return i;
}

sampleattn_stats default_stats() {
  sampleattn_stats s{};
  s.struct_size = sizeof(s);
  s.isa = s.precision = "";
  s.cra_min = 1.f;
  s.head_stats_size = sampleattn::abi::kFirstHeadStatsSize;
  return s;
}

sampleattn_plan_info default_plan_info() {
  sampleattn_plan_info i{};
  i.struct_size = sizeof(i);
  return i;
}

}  // namespace

extern "C" {

const char* sampleattn_status_string(sampleattn_status status) {
  // As its raw integer (core/enum_value.h): a C caller may pass any int.
  switch (sampleattn::enum_value(status)) {
    case SAMPLEATTN_SUCCESS: return "SAMPLEATTN_SUCCESS";
    case SAMPLEATTN_INVALID_ARGUMENT: return "SAMPLEATTN_INVALID_ARGUMENT";
    case SAMPLEATTN_NULL_POINTER: return "SAMPLEATTN_NULL_POINTER";
    case SAMPLEATTN_INVALID_SHAPE: return "SAMPLEATTN_INVALID_SHAPE";
    case SAMPLEATTN_UNSUPPORTED_HEAD_DIM: return "SAMPLEATTN_UNSUPPORTED_HEAD_DIM";
    case SAMPLEATTN_UNSUPPORTED_DTYPE: return "SAMPLEATTN_UNSUPPORTED_DTYPE";
    case SAMPLEATTN_UNSUPPORTED_BACKEND: return "SAMPLEATTN_UNSUPPORTED_BACKEND";
    case SAMPLEATTN_OUT_OF_MEMORY: return "SAMPLEATTN_OUT_OF_MEMORY";
    case SAMPLEATTN_DEVICE_ERROR: return "SAMPLEATTN_DEVICE_ERROR";
    case SAMPLEATTN_INTERNAL_ERROR: return "SAMPLEATTN_INTERNAL_ERROR";
    case SAMPLEATTN_UNSUPPORTED_VERSION: return "SAMPLEATTN_UNSUPPORTED_VERSION";
  }
  return "SAMPLEATTN_UNKNOWN_STATUS";
}

const char* sampleattn_last_error(void) { return g_last_error.c_str(); }

const char* sampleattn_version(void) { return SAMPLEATTN_VERSION_STRING; }

void sampleattn_kv_cache_init_sized(sampleattn_kv_cache* cache, size_t size) {
  sampleattn::abi::init(cache, size, sampleattn::default_kv_cache());
}

void sampleattn_context_options_init_sized(sampleattn_context_options* options, size_t size) {
  sampleattn::abi::init(options, size, default_options());
}

sampleattn_status sampleattn_context_create(const sampleattn_context_options* options,
                                            sampleattn_context** context) {
  return guarded([&]() -> Status {
    if (context == nullptr) return sampleattn::null_pointer("context is NULL");
    *context = nullptr;
    sampleattn_context_options o = default_options();
    if (options != nullptr) {
      SAMPLEATTN_RETURN_IF_ERROR(sampleattn::abi::read(*options, "options", "sampleattn_context_options_init",
                                                       default_options(), &o));
    }
    SAMPLEATTN_RETURN_IF_ERROR(check_options(o));
    sampleattn::BackendOptions bo;
    bo.num_threads = o.num_threads;
    bo.bind = o.binding == SAMPLEATTN_BIND_CORES;
    bo.cuda_device = o.cuda_device;
    bo.max_workspace_bytes = o.max_workspace_bytes;
    bo.parallel_for = o.parallel_for;
    bo.host_pool = o.host_pool;

    auto ctx = std::make_unique<sampleattn_context>();
    // The host places its own threads: the library binds none.
    ctx->binding = o.parallel_for != nullptr ? SAMPLEATTN_BIND_NONE : o.binding;
    std::string cuda_line = "cuda: not tried (backend CPU requested)";
    if (o.backend == SAMPLEATTN_BACKEND_CUDA || o.backend == SAMPLEATTN_BACKEND_AUTO) {
      Status cuda = sampleattn::cuda::create_backend(bo, &ctx->backend);
      if (!cuda.is_ok()) {
        if (o.backend == SAMPLEATTN_BACKEND_CUDA) return cuda;
        ctx->note = "CPU chosen: " + cuda.message();
        cuda_line = "cuda: unavailable (" + cuda.message() + ")";
      } else {
        ctx->note = "CUDA device found";
        cuda_line = std::string("cuda: in use (module ") + sampleattn::cuda::module_path() + ")";
      }
    }
    if (!ctx->backend) {
      SAMPLEATTN_RETURN_IF_ERROR(sampleattn::cpu::create_backend(bo, &ctx->backend));
      if (o.backend == SAMPLEATTN_BACKEND_CPU) ctx->note = "CPU requested";
      ctx->backends = std::string(o.parallel_for != nullptr ? "cpu: in use (host pool); " : "cpu: in use; ") + cuda_line;
    } else {
      ctx->backends = "cpu: available; " + cuda_line;
    }
    *context = ctx.release();
    return Status::ok();
  });
}

void sampleattn_context_destroy(sampleattn_context* context) { delete context; }

void sampleattn_context_info_init_sized(sampleattn_context_info* info, size_t size) {
  sampleattn::abi::init(info, size, default_info());
}

sampleattn_status sampleattn_context_get_info(const sampleattn_context* context,
                                              sampleattn_context_info* info) {
  return guarded([&]() -> Status {
    if (context == nullptr || info == nullptr) {
      return sampleattn::null_pointer(context == nullptr ? "context is NULL" : "info is NULL");
    }
    SAMPLEATTN_RETURN_IF_ERROR(
        sampleattn::abi::check_output_size(*info, "info", "sampleattn_context_info_init"));
    sampleattn_context_info full = default_info();
    context->backend->describe(&full);
    full.note = context->note.c_str();
    full.binding = context->binding;
    const sampleattn::HostReport& host = sampleattn::host_report();
    full.cpu_model = host.cpu_model.c_str();
    full.cpu_tables = host.cpu_tables.c_str();
    full.backends = context->backends.c_str();
    full.environment = host.environment.c_str();
    sampleattn::abi::write_back(full, info);
    return Status::ok();
  });
}

void sampleattn_sample_params_init_sized(sampleattn_sample_params* p, size_t size) {
  sampleattn::abi::init(p, size, sampleattn::default_sample_params());
}

void sampleattn_params_init_sized(sampleattn_params* p, size_t size) {
  sampleattn::abi::init(p, size, sampleattn::default_params());
}

void sampleattn_stats_init_sized(sampleattn_stats* s, size_t size) {
  sampleattn::abi::init(s, size, default_stats());
}

void sampleattn_plan_info_init_sized(sampleattn_plan_info* info, size_t size) {
  sampleattn::abi::init(info, size, default_plan_info());
}

sampleattn_status sampleattn_plan(sampleattn_context* context, const sampleattn_params* params,
                                  sampleattn_plan_info* info) {
  return guarded([&]() -> Status {
    if (context == nullptr) return sampleattn::null_pointer("context is NULL");
    if (info != nullptr) {
      SAMPLEATTN_RETURN_IF_ERROR(sampleattn::abi::check_output_size(*info, "info", "sampleattn_plan_info_init"));
    }
    sampleattn::Problem problem;
    SAMPLEATTN_RETURN_IF_ERROR(sampleattn::build_problem(params, /*check_data=*/false, &problem));
    sampleattn_plan_info local = default_plan_info();
    SAMPLEATTN_RETURN_IF_ERROR(context->backend->plan(problem, &local));
    local.total_q_tokens = problem.total_q;
    local.total_k_tokens = problem.total_k;
    local.dense_flops = 2.0 * (problem.head_dim + problem.head_dim_v) * problem.dense_pairs();  // QK^T over d, PV over dv
    if (info != nullptr) sampleattn::abi::write_back(local, info);
    return Status::ok();
  });
}

sampleattn_status sampleattn_forward(sampleattn_context* context, const sampleattn_params* params,
                                     sampleattn_stats* stats) {
  return guarded([&]() -> Status {
    if (context == nullptr) return sampleattn::null_pointer("context is NULL");
    // stats is read (its caller arrays) and written: through a full-size copy.
    sampleattn_stats full = default_stats();
    if (stats != nullptr) {
      SAMPLEATTN_RETURN_IF_ERROR(
          sampleattn::abi::read(*stats, "stats", "sampleattn_stats_init", default_stats(), &full));
    }
    sampleattn::Problem problem;
    SAMPLEATTN_RETURN_IF_ERROR(sampleattn::build_problem(params, /*check_data=*/true, &problem));
    if (full.stripes != nullptr && full.stripe_offsets == nullptr) {
      return sampleattn::null_pointer("stats.stripes is set but stats.stripe_offsets is NULL");
    }
    if (full.head_stats != nullptr) {
      if (full.head_stats_size > sizeof(sampleattn_head_stats)) {
        return {SAMPLEATTN_UNSUPPORTED_VERSION,
                "stats.head_stats_size " + std::to_string(full.head_stats_size) + " is larger than this library's " +
                    std::to_string(sizeof(sampleattn_head_stats)) + ": a newer sampleattn.h than the library"};
      }
      if (full.head_stats_size < sampleattn::abi::kFirstHeadStatsSize) {
        return sampleattn::invalid_argument("stats.head_stats_size " + std::to_string(full.head_stats_size) +
                                            " is below the first layout's " +
                                            std::to_string(sampleattn::abi::kFirstHeadStatsSize) +
                                            ": fill stats with sampleattn_stats_init()");
      }
    }
    SAMPLEATTN_RETURN_IF_ERROR(context->backend->forward(problem, stats != nullptr ? &full : nullptr));
    if (stats != nullptr) sampleattn::abi::write_back(full, stats);
    return Status::ok();
  });
}


sampleattn_status sampleattn_private_sharded_forward(sampleattn_context* context, const sampleattn_params* params,
                                                     const sampleattn_private_run* runs, int64_t num_runs,
                                                     const sampleattn_private_collective* collective,
                                                     sampleattn_stats* stats) {
  return guarded([&]() -> Status {
    if (context == nullptr) return sampleattn::null_pointer("context is NULL");
    if (collective == nullptr || collective->sum_i64 == nullptr || collective->sum_f64 == nullptr ||
        collective->max_f32 == nullptr || collective->all_gather == nullptr || collective->all_to_all == nullptr) {
      return sampleattn::null_pointer("collective or one of its callbacks is NULL");
    }
    if (collective->size < 1 || collective->rank < 0 || collective->rank >= collective->size) {
      return sampleattn::invalid_argument("collective rank " + std::to_string(collective->rank) + " of " +
                                          std::to_string(collective->size));
    }
    // What this process can check alone, agreed on before anything else, so that no process
    // waits in a collective for one that has returned.
    sampleattn_stats full = default_stats();
    sampleattn::Problem problem;
    sampleattn::ShardMap map;
    const Status checked = [&]() -> Status {
      if (stats != nullptr) {
        SAMPLEATTN_RETURN_IF_ERROR(
            sampleattn::abi::read(*stats, "stats", "sampleattn_stats_init", default_stats(), &full));
        if (full.stripes != nullptr && full.stripe_offsets == nullptr) {
          return sampleattn::null_pointer("stats.stripes is set but stats.stripe_offsets is NULL");
        }
        if (full.head_stats != nullptr && full.head_stats_size != sizeof(sampleattn_head_stats)) {
          return sampleattn::invalid_argument("stats.head_stats_size must be this library's sizeof(sampleattn_head_stats)");
        }
      }
      // Shapes and parameters of the whole batch; the tensors are this process's.
      SAMPLEATTN_RETURN_IF_ERROR(sampleattn::build_problem(params, /*check_data=*/false, &problem));
      if (problem.method != SAMPLEATTN_METHOD_SAMPLE) return sampleattn::invalid_argument("a sharded call runs method sample");
      if (!problem.causal || problem.window_left >= 0 || !problem.alibi_slopes.empty() || problem.paged() ||
          problem.kv.k_scale != nullptr || problem.kv.v_scale != nullptr) {
        return sampleattn::invalid_argument(
            "a sharded call is causal self-attention over packed, unquantized K/V without window_left or ALiBi");
      }
      for (const sampleattn::Sequence& seq : problem.sequences) {
        if (seq.q_len != seq.k_len) return sampleattn::invalid_shape("a sharded call's sequences have q_len == k_len");
      }
      return shard_map(problem, runs, num_runs, collective->size, &map);
    }();
    CallbackCollective coll(*collective);
    int64_t failed = checked.is_ok() ? 0 : 1;
    SAMPLEATTN_RETURN_IF_ERROR(coll.sum(&failed, 1));
    if (!checked.is_ok()) return checked;
    if (failed > 0) return sampleattn::internal_error("another process of the sharded call failed its checks");
    SAMPLEATTN_RETURN_IF_ERROR(context->backend->forward_sharded(problem, map, coll, stats != nullptr ? &full : nullptr));
    if (stats != nullptr) sampleattn::abi::write_back(full, stats);
    return Status::ok();
  });
}

}  // extern "C"
