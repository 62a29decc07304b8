// CUDA runtime errors as Status: every CUDA call of the backend is checked, and a failure becomes
// SAMPLEATTN_DEVICE_ERROR with the runtime's name and message.
#pragma once

#include <cuda_runtime_api.h>

#include <string>

#include "core/status.h"

namespace sampleattn::cuda {

Status device_error(const std::string& what, cudaError_t err);

// Returns device_error(what, ...) from the enclosing function when `expr` fails.
#define SAMPLEATTN_CUDA_CHECK(what, expr)                                       \
  do {                                                                          \
    const cudaError_t cuda_status_ = (expr);                                    \
    if (cuda_status_ != cudaSuccess) return device_error((what), cuda_status_); \
  } while (0)

// Makes `device` current for the scope and restores the caller's device afterwards.
class DeviceScope {
 public:
  explicit DeviceScope(int device);
  ~DeviceScope();
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;
  cudaError_t status() const { return status_; }

 private:
  int previous_ = -1;
  bool changed_ = false;
  cudaError_t status_ = cudaSuccess;
};

}  // namespace sampleattn::cuda
