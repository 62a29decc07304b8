// The seam between libsampleattn and a backend shipped as a module. The CUDA backend is built as
// libsampleattn_cuda.so, which the library loads with dlopen at the first context creation that
// asks for CUDA (or AUTO), so the core library carries no CUDA runtime: a CPU host installs only
// libsampleattn, a GPU host adds the one module file (docs/ABI.md, "Backend modules").
//
// The module exports one C function, kCudaModuleEntry, of type CudaModuleCreateFn. The objects
// that cross (BackendOptions, Problem, the Backend it creates) are C++ types of this source tree,
// so a module is accepted only from the same build: both sides compute module_tag() and the
// module refuses a different one.
#pragma once

#include <cstddef>
#include <string>

#include "core/backend.h"
#include "core/problem.h"

namespace sampleattn {

inline constexpr char kCudaModuleEntry[] = "sampleattn_cuda_module_create";
inline constexpr char kCudaModuleFile[] = "libsampleattn_cuda.so";

// Creates the backend into *backend (owned by the caller, deleted through its virtual destructor)
// and returns SAMPLEATTN_SUCCESS, or a status with its message in message[0 .. message_size).
using CudaModuleCreateFn = int (*)(const char* tag, const BackendOptions* options, Backend** backend,
                                   char* message, size_t message_size);

// The library version and the layouts that cross the seam.
inline std::string module_tag() {
  return std::string("sampleattn ") + std::to_string(SAMPLEATTN_VERSION_MAJOR) + "." +
         std::to_string(SAMPLEATTN_VERSION_MINOR) + "." + std::to_string(SAMPLEATTN_VERSION_PATCH) +
         " problem " + std::to_string(sizeof(Problem)) + " sequence " + std::to_string(sizeof(Sequence)) +
         " options " + std::to_string(sizeof(BackendOptions)) + " status " + std::to_string(sizeof(Status)) +
         " stats " + std::to_string(sizeof(sampleattn_stats)) + " info " +
         std::to_string(sizeof(sampleattn_context_info));
}

}  // namespace sampleattn
