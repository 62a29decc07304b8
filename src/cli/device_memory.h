// Buffers on the memory of the backend a context runs on: host memory for the CPU, device memory
// (cudaMalloc) for CUDA, so the same bench and run code feeds either backend.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "sampleattn/sampleattn.h"

namespace sampleattn::cli {

class BackendMemory {
 public:
  explicit BackendMemory(sampleattn_backend backend) : backend_(backend) {}
  ~BackendMemory();
  BackendMemory(const BackendMemory&) = delete;
  BackendMemory& operator=(const BackendMemory&) = delete;

  // nullptr with `error` set on failure.
  void* upload(const void* host, size_t bytes, std::string* error);
  void* allocate(size_t bytes, std::string* error);
  bool download(const void* buffer, size_t bytes, void* host, std::string* error);
  void release_all();

 private:
  sampleattn_backend backend_;
  std::vector<void*> buffers_;
};

}  // namespace sampleattn::cli
