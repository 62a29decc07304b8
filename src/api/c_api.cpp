// C entry points: argument checks, the backend table, and the translation of internal Status
// values into return codes plus a per-thread message. Nothing here prints, aborts or throws.
#include <cmath>
#include <exception>
#include <memory>
#include <new>
#include <string>

#include "core/backend.h"
#include "core/enum_value.h"
#include "core/problem.h"
#include "core/status.h"
#include "sampleattn/sampleattn.h"

struct sampleattn_context {
  std::unique_ptr<sampleattn::Backend> backend;
  std::string note;          // why AUTO chose what it chose
  std::string device_name;   // kept alive for sampleattn_context_info
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
  if (o.struct_size != sizeof(sampleattn_context_options)) {
    return sampleattn::invalid_argument("options.struct_size is " + std::to_string(o.struct_size) +
                                        ", expected " + std::to_string(sizeof(sampleattn_context_options)) +
                                        ": fill it with sampleattn_context_options_init()");
  }
  const int32_t backend = sampleattn::enum_value(o.backend);
  if (backend != SAMPLEATTN_BACKEND_AUTO && backend != SAMPLEATTN_BACKEND_CPU &&
      backend != SAMPLEATTN_BACKEND_CUDA) {
    return sampleattn::invalid_argument("options.backend " + std::to_string(backend) +
                                        " is not a sampleattn_backend");
  }
  if (o.num_threads < 0) {
    return sampleattn::invalid_argument("options.num_threads must be >= 0 (0 = one per core)");
  }
  const int32_t binding = sampleattn::enum_value(o.binding);
  if (binding != SAMPLEATTN_BIND_CORES && binding != SAMPLEATTN_BIND_NONE) {
    return sampleattn::invalid_argument("options.binding " + std::to_string(binding) +
                                        " is not a sampleattn_binding");
  }
  if (o.cuda_device < 0) return sampleattn::invalid_argument("options.cuda_device must be >= 0");
  return Status::ok();
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
  }
  return "SAMPLEATTN_UNKNOWN_STATUS";
}

const char* sampleattn_last_error(void) { return g_last_error.c_str(); }

const char* sampleattn_version(void) { return "0.1.0"; }

void sampleattn_context_options_init(sampleattn_context_options* options) {
  if (options == nullptr) return;
  *options = {};
  options->struct_size = sizeof(sampleattn_context_options);
  options->backend = SAMPLEATTN_BACKEND_AUTO;
  options->num_threads = 0;
  options->binding = SAMPLEATTN_BIND_CORES;
  options->cuda_device = 0;
  options->max_workspace_bytes = 0;
}

sampleattn_status sampleattn_context_create(const sampleattn_context_options* options,
                                            sampleattn_context** context) {
  return guarded([&]() -> Status {
    if (context == nullptr) return sampleattn::null_pointer("context is NULL");
    *context = nullptr;
    sampleattn_context_options o;
    sampleattn_context_options_init(&o);
    if (options != nullptr) o = *options;
    SAMPLEATTN_RETURN_IF_ERROR(check_options(o));
    sampleattn::BackendOptions bo;
    bo.num_threads = o.num_threads;
    bo.bind = o.binding == SAMPLEATTN_BIND_CORES;
    bo.cuda_device = o.cuda_device;
    bo.max_workspace_bytes = o.max_workspace_bytes;

    auto ctx = std::make_unique<sampleattn_context>();
    if (o.backend == SAMPLEATTN_BACKEND_CUDA || o.backend == SAMPLEATTN_BACKEND_AUTO) {
      Status cuda = sampleattn::cuda::create_backend(bo, &ctx->backend);
      if (!cuda.is_ok()) {
        if (o.backend == SAMPLEATTN_BACKEND_CUDA) return cuda;
        ctx->note = "CPU chosen: " + cuda.message();
      } else {
        ctx->note = "CUDA device found";
      }
    }
    if (!ctx->backend) {
      SAMPLEATTN_RETURN_IF_ERROR(sampleattn::cpu::create_backend(bo, &ctx->backend));
      if (o.backend == SAMPLEATTN_BACKEND_CPU) ctx->note = "CPU requested";
    }
    *context = ctx.release();
    return Status::ok();
  });
}

void sampleattn_context_destroy(sampleattn_context* context) { delete context; }

void sampleattn_context_info_init(sampleattn_context_info* info) {
  if (info == nullptr) return;
  *info = {};
  info->struct_size = sizeof(sampleattn_context_info);
  info->isa = "";
  info->device_name = "";
  info->note = "";
}

sampleattn_status sampleattn_context_get_info(const sampleattn_context* context,
                                              sampleattn_context_info* info) {
  return guarded([&]() -> Status {
    if (context == nullptr || info == nullptr) {
      return sampleattn::null_pointer(context == nullptr ? "context is NULL" : "info is NULL");
    }
    if (info->struct_size != sizeof(sampleattn_context_info)) {
      return sampleattn::invalid_argument("info.struct_size mismatch: fill it with sampleattn_context_info_init()");
    }
    context->backend->describe(info);
    info->note = context->note.c_str();
    return Status::ok();
  });
}

void sampleattn_sample_params_init(sampleattn_sample_params* p) {
  if (p == nullptr) return;
  *p = {};
  p->struct_size = sizeof(sampleattn_sample_params);
  p->alpha = 0.95f;
  p->r_row = 0.05f;
  p->r_w = 0.08f;
  p->min_window = 64;
  p->sample_block = 64;
  p->min_stripes = 0;
  p->max_stripes = 0;
  p->sink_tokens = 4;
  p->dense_below = 2048;
  p->scope = SAMPLEATTN_STRIPES_PER_HEAD;
  p->window_mass_counts = 0;
  p->max_density = 0.5f;
}

void sampleattn_params_init(sampleattn_params* p) {
  if (p == nullptr) return;
  *p = {};
  p->struct_size = sizeof(sampleattn_params);
  p->q.dtype = p->k.dtype = p->v.dtype = SAMPLEATTN_DTYPE_F32;
  p->o.dtype = SAMPLEATTN_DTYPE_F32;
  p->batch = 1;
  p->softmax_scale = 0.f;
  p->causal = 1;
  p->method = SAMPLEATTN_METHOD_DENSE;
  p->precision = SAMPLEATTN_PRECISION_F32;
  sampleattn_sample_params_init(&p->sample);
}

void sampleattn_stats_init(sampleattn_stats* s) {
  if (s == nullptr) return;
  *s = {};
  s->struct_size = sizeof(sampleattn_stats);
  s->isa = "";
  s->cra_min = 1.f;
}

void sampleattn_plan_info_init(sampleattn_plan_info* info) {
  if (info == nullptr) return;
  *info = {};
  info->struct_size = sizeof(sampleattn_plan_info);
}

sampleattn_status sampleattn_plan(sampleattn_context* context, const sampleattn_params* params,
                                  sampleattn_plan_info* info) {
  return guarded([&]() -> Status {
    if (context == nullptr) return sampleattn::null_pointer("context is NULL");
    if (info != nullptr && info->struct_size != sizeof(sampleattn_plan_info)) {
      return sampleattn::invalid_argument("info.struct_size mismatch: fill it with sampleattn_plan_info_init()");
    }
    sampleattn::Problem problem;
    SAMPLEATTN_RETURN_IF_ERROR(sampleattn::build_problem(params, /*check_data=*/false, &problem));
    sampleattn_plan_info local;
    sampleattn_plan_info_init(&local);
    SAMPLEATTN_RETURN_IF_ERROR(context->backend->plan(problem, &local));
    local.total_q_tokens = problem.total_q;
    local.total_k_tokens = problem.total_k;
    local.dense_flops = 4.0 * problem.head_dim * problem.dense_pairs();
    if (info != nullptr) *info = local;
    return Status::ok();
  });
}

sampleattn_status sampleattn_forward(sampleattn_context* context, const sampleattn_params* params,
                                     sampleattn_stats* stats) {
  return guarded([&]() -> Status {
    if (context == nullptr) return sampleattn::null_pointer("context is NULL");
    if (stats != nullptr && stats->struct_size != sizeof(sampleattn_stats)) {
      return sampleattn::invalid_argument("stats.struct_size mismatch: fill it with sampleattn_stats_init()");
    }
    sampleattn::Problem problem;
    SAMPLEATTN_RETURN_IF_ERROR(sampleattn::build_problem(params, /*check_data=*/true, &problem));
    if (stats != nullptr && stats->stripes != nullptr && stats->stripe_offsets == nullptr) {
      return sampleattn::null_pointer("stats.stripes is set but stats.stripe_offsets is NULL");
    }
    return context->backend->forward(problem, stats);
  });
}

}  // extern "C"
