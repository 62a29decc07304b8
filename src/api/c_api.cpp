// C entry points: argument checks, the backend table, and the translation of internal Status
// values into return codes plus a per-thread message. Nothing here prints, aborts or throws.
#include <cmath>
#include <exception>
#include <memory>
#include <new>
#include <string>

#include "core/abi.h"
#include "core/backend.h"
#include "core/enum_value.h"
#include "core/problem.h"
#include "core/status.h"
#include "api/host_report.h"
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
  switch (status) {
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

}  // extern "C"
