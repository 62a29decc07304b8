// The CUDA entry of the backend table: loads the CUDA backend module (core/backend_module.h) once
// per process and asks it for a backend. The module is looked for, in order:
//   1. SAMPLEATTN_CUDA_MODULE, a path (only there, when set);
//   2. beside the binary that holds this code (libsampleattn.so, or a program that linked the
//      static archive), then in <that directory>/../<libdir> (a program in <prefix>/bin);
//   3. by file name through the dynamic loader's search (LD_LIBRARY_PATH, the caller's RUNPATH,
//      the system's library directories).
// A module that is loaded stays loaded for the life of the process (its backends may still exist).
#include <dlfcn.h>

#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/backend_module.h"

#ifndef SAMPLEATTN_INSTALL_LIBDIR
#define SAMPLEATTN_INSTALL_LIBDIR "lib"
#endif

namespace sampleattn::cuda {
namespace {

struct Module {
  CudaModuleCreateFn create = nullptr;
  std::string path;  // where it was loaded from
  std::string why;   // why none was loaded
};

std::string directory_of_this_binary() {
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&directory_of_this_binary), &info) == 0 || info.dli_fname == nullptr) {
    return "";
  }
  std::string path = info.dli_fname;
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? std::string(".") : path.substr(0, slash);
}

// dlopen's message, or a fallback.
std::string dl_error() {
  const char* e = dlerror();
  return e != nullptr ? e : "unknown dlopen error";
}

bool try_open(const std::string& path, Module* m, std::vector<std::string>* failures) {
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    failures->push_back(dl_error());
    return false;
  }
  auto create = reinterpret_cast<CudaModuleCreateFn>(dlsym(handle, kCudaModuleEntry));
  if (create == nullptr) {
    failures->push_back(path + ": no " + kCudaModuleEntry + " (not a sampleattn CUDA module)");
    dlclose(handle);
    return false;
  }
  m->create = create;
  Dl_info info{};
  m->path = dladdr(reinterpret_cast<void*>(create), &info) != 0 && info.dli_fname ? info.dli_fname : path;
  if (char* resolved = realpath(m->path.c_str(), nullptr); resolved != nullptr) {  // no "bin/../lib"
    m->path = resolved;
    std::free(resolved);
  }
  return true;
}

Module load() {
  Module m;
  std::vector<std::string> failures;
  if (const char* forced = std::getenv("SAMPLEATTN_CUDA_MODULE"); forced != nullptr && *forced != '\0') {
    if (!try_open(forced, &m, &failures)) m.why = "SAMPLEATTN_CUDA_MODULE=" + std::string(forced) + ": " + failures[0];
    return m;
  }
  const std::string here = directory_of_this_binary();
  std::vector<std::string> candidates;
  if (!here.empty()) {
    candidates.push_back(here + "/" + kCudaModuleFile);
    candidates.push_back(here + "/../" + SAMPLEATTN_INSTALL_LIBDIR + "/" + kCudaModuleFile);
  }
  candidates.push_back(kCudaModuleFile);  // the loader's own search
  for (const std::string& c : candidates) {
    if (try_open(c, &m, &failures)) return m;
  }
#if SAMPLEATTN_CUDA_MODULE_BUILT
  m.why = std::string("the CUDA backend module ") + kCudaModuleFile + " was not found (" + failures.back() +
          "; looked beside " + (here.empty() ? "?" : here) + " and in the loader's path)";
#else
  m.why = std::string("this build of sampleattn has no CUDA backend (configured with SAMPLEATTN_CUDA=OFF or "
                      "without nvcc), and no ") + kCudaModuleFile + " was found";
#endif
  return m;
}

const Module& module() {
  static const Module m = load();
  return m;
}

}  // namespace

const char* module_path() { return module().path.c_str(); }

Status create_backend(const BackendOptions& options, std::unique_ptr<Backend>* backend) {
  const Module& m = module();
  if (m.create == nullptr) return unsupported_backend(m.why);
  char message[1024] = {};
  Backend* created = nullptr;
  const std::string tag = module_tag();
  const int code = m.create(tag.c_str(), &options, &created, message, sizeof(message));
  if (code != SAMPLEATTN_SUCCESS || created == nullptr) {
    return {code == SAMPLEATTN_SUCCESS ? SAMPLEATTN_INTERNAL_ERROR : static_cast<sampleattn_status>(code),
            std::string(message) + " (CUDA module " + m.path + ")"};
  }
  backend->reset(created);
  return Status::ok();
}

}  // namespace sampleattn::cuda
