// The CUDA module's one exported function (core/backend_module.h): checks that the loading
// library is the same build, then creates the CUDA backend. No exception leaves it.
#include <cstring>
#include <exception>
#include <new>

#include "core/backend_module.h"

namespace {

int fail(const sampleattn::Status& status, char* message, size_t size) {
  if (message != nullptr && size > 0) {
    std::strncpy(message, status.message().c_str(), size - 1);
    message[size - 1] = '\0';
  }
  return status.code();
}

}  // namespace

extern "C" __attribute__((visibility("default"))) int sampleattn_cuda_module_create(
    const char* tag, const sampleattn::BackendOptions* options, sampleattn::Backend** backend,
    char* message, size_t message_size) {
  using sampleattn::Status;
  try {
    const std::string mine = sampleattn::module_tag();
    if (tag == nullptr || mine != tag) {
      return fail(sampleattn::unsupported_backend(std::string("the CUDA module is from another build of "
                                                              "sampleattn (module: ") +
                                                  mine + "; library: " + (tag ? tag : "?") + ")"),
                  message, message_size);
    }
    if (options == nullptr || backend == nullptr) {
      return fail(sampleattn::internal_error("CUDA module: null argument"), message, message_size);
    }
    std::unique_ptr<sampleattn::Backend> created;
    const Status status = sampleattn::cuda::create_backend(*options, &created);
    if (!status.is_ok()) return fail(status, message, message_size);
    *backend = created.release();
    return SAMPLEATTN_SUCCESS;
  } catch (const std::bad_alloc&) {
    return fail(sampleattn::out_of_memory("out of memory creating the CUDA backend"), message, message_size);
  } catch (const std::exception& e) {
    return fail(sampleattn::internal_error(std::string("CUDA module: ") + e.what()), message, message_size);
  } catch (...) {
    return fail(sampleattn::internal_error("CUDA module: unexpected exception"), message, message_size);
  }
}
