// The CUDA entry of the backend table in a build without CUDA.
#include "core/backend.h"

namespace sampleattn::cuda {

Status create_backend(const BackendOptions&, std::unique_ptr<Backend>*) {
  return unsupported_backend("this build of sampleattn has no CUDA backend (configured with "
                             "SAMPLEATTN_CUDA=OFF or without nvcc)");
}

}  // namespace sampleattn::cuda
