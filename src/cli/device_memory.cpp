#include "cli/device_memory.h"

#include <cstdlib>
#include <cstring>

#ifdef SAMPLEATTN_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace sampleattn::cli {

BackendMemory::~BackendMemory() { release_all(); }

void* BackendMemory::allocate(size_t bytes, std::string* error) {
  void* p = nullptr;
  const size_t n = bytes == 0 ? 64 : bytes;
  if (backend_ == SAMPLEATTN_BACKEND_CUDA) {
#ifdef SAMPLEATTN_WITH_CUDA
    const cudaError_t e = cudaMalloc(&p, n);
    if (e != cudaSuccess) {
      *error = "cudaMalloc of " + std::to_string(n) + " bytes: " + cudaGetErrorString(e);
      return nullptr;
    }
#else
    *error = "this build has no CUDA";
    return nullptr;
#endif
  } else {
    p = std::aligned_alloc(64, (n + 63) / 64 * 64);
    if (p == nullptr) {
      *error = "out of host memory: cannot allocate " + std::to_string(n) + " bytes";
      return nullptr;
    }
  }
  buffers_.push_back(p);
  return p;
}

void* BackendMemory::upload(const void* host, size_t bytes, std::string* error) {
  void* p = allocate(bytes, error);
  if (p == nullptr) return nullptr;
  if (backend_ == SAMPLEATTN_BACKEND_CUDA) {
#ifdef SAMPLEATTN_WITH_CUDA
    const cudaError_t e = cudaMemcpy(p, host, bytes, cudaMemcpyHostToDevice);
    if (e != cudaSuccess) {
      *error = std::string("cudaMemcpy: ") + cudaGetErrorString(e);
      return nullptr;
    }
#endif
  } else if (bytes > 0) {
    std::memcpy(p, host, bytes);
  }
  return p;
}

bool BackendMemory::download(const void* buffer, size_t bytes, void* host, std::string* error) {
  if (backend_ == SAMPLEATTN_BACKEND_CUDA) {
#ifdef SAMPLEATTN_WITH_CUDA
    const cudaError_t e = cudaMemcpy(host, buffer, bytes, cudaMemcpyDeviceToHost);
    if (e != cudaSuccess) {
      *error = std::string("cudaMemcpy: ") + cudaGetErrorString(e);
      return false;
    }
    return true;
#else
    *error = "this build has no CUDA";
    return false;
#endif
  }
  std::memcpy(host, buffer, bytes);
  return true;
}

void BackendMemory::release_all() {
  for (void* p : buffers_) {
    if (backend_ == SAMPLEATTN_BACKEND_CUDA) {
#ifdef SAMPLEATTN_WITH_CUDA
      cudaFree(p);
#endif
    } else {
      std::free(p);
    }
  }
  buffers_.clear();
}

}  // namespace sampleattn::cli
