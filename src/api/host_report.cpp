#include "api/host_report.h"

#include <cstdlib>
#include <cstring>

#include "cpu/thread_pool.h"
#include "simd/cpu_features.h"
#include "simd/dispatch.h"
#include "simd/isa.h"
#include "simd/kernels.h"

namespace sampleattn {
namespace {

void append(std::string* list, const std::string& item, const char* separator = ", ") {
  if (!list->empty()) *list += separator;
  *list += item;
}

std::string isa_list() {
  std::string names;
  for (Isa isa : kAllIsas) append(&names, isa_name(isa));
  return names;
}

std::string describe_tables() {
  std::string tables;
  for (int i = kNumIsas - 1; i >= 0; --i) {
    const KernelTable* t = kernel_table_for(kAllIsas[i]);
    if (t == nullptr) continue;
    std::string products = t->isa == Isa::kScalar ? "f32" : "f32 fma";
    if (t->path(Precision::kBF16) != nullptr) products += t->isa == Isa::kAmx ? ", bf16 tiles" : ", bf16 dot";
    append(&tables, std::string(t->name) + " (" + products + ")");
  }
  const CpuFeatures& f = cpu_features();
  if (f.amx_bf16 && !f.amx_permitted) tables += "; AMX tiles present but Linux refused the tile state";
#if defined(SAMPLEATTN_AMX_EMULATE)
  tables += "; AMX tiles EMULATED in software (SAMPLEATTN_AMX_EMULATE build, for testing only)";
#endif
  return tables;
}

// The variables the library knows, and what it made of each one that is set.
std::string describe_environment() {
  std::string report;
  if (const char* isa = std::getenv("SAMPLEATTN_ISA"); isa != nullptr) {
    Isa cap;
    if (!parse_isa(isa, &cap)) {
      append(&report, std::string("SAMPLEATTN_ISA=") + isa + " rejected (not one of: " + isa_list() + ")", "; ");
    } else if (cap > best_supported_isa()) {
      append(&report, std::string("SAMPLEATTN_ISA=") + isa + " read (above this CPU's best, " +
                          isa_name(best_supported_isa()) + ": no effect)", "; ");
    } else {
      append(&report, std::string("SAMPLEATTN_ISA=") + isa + " read (tables capped at " + isa + ")", "; ");
    }
  }
  if (const char* threads = std::getenv("SAMPLEATTN_NUM_THREADS"); threads != nullptr) {
    std::string why;
    const int n = cpu::threads_from_environment(&why);
    if (n > 0) {
      append(&report, std::string("SAMPLEATTN_NUM_THREADS=") + threads +
                          " read (the default when options.num_threads is 0)", "; ");
    } else if (*threads != '\0') {
      append(&report, std::string("SAMPLEATTN_NUM_THREADS=") + threads + " rejected (" + why + ")", "; ");
    }
  }
  for (const char* name : {"SAMPLEATTN_CUDA_MODULE", "SAMPLEATTN_CUDA_MMA_SYNC"}) {
    if (const char* value = std::getenv(name); value != nullptr) {
      append(&report, std::string(name) + "=" + value + " read (CUDA backend)", "; ");
    }
  }
  return report;
}

}  // namespace

const HostReport& host_report() {
  static const HostReport report{cpu_model_name(), describe_tables(), describe_environment()};
  return report;
}

}  // namespace sampleattn
