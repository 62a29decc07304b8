#include "cuda/cuda_errors.h"

namespace sampleattn::cuda {

Status device_error(const std::string& what, cudaError_t err) {
  return {SAMPLEATTN_DEVICE_ERROR,
          what + ": " + cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ")"};
}

DeviceScope::DeviceScope(int device) {
  if (cudaGetDevice(&previous_) != cudaSuccess) previous_ = -1;
  status_ = previous_ == device ? cudaSuccess : cudaSetDevice(device);
  changed_ = previous_ != device && status_ == cudaSuccess && previous_ >= 0;
}

DeviceScope::~DeviceScope() {
  if (changed_) (void)cudaSetDevice(previous_);
}

}  // namespace sampleattn::cuda
