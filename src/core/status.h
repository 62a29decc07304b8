// Internal error handling: a Status carries a public status code and a message. The C API turns
// it into a return code plus the thread's last-error string; nothing inside the library prints,
// throws across the C boundary or aborts.
#pragma once

#include <string>
#include <utility>

#include "sampleattn/sampleattn.h"

namespace sampleattn {

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(sampleattn_status code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status ok() { return {}; }
  bool is_ok() const { return code_ == SAMPLEATTN_SUCCESS; }
  sampleattn_status code() const { return code_; }
  const std::string& message() const { return message_; }

 private:
  sampleattn_status code_ = SAMPLEATTN_SUCCESS;
  std::string message_;
};

inline Status invalid_argument(std::string m) { return {SAMPLEATTN_INVALID_ARGUMENT, std::move(m)}; }
inline Status null_pointer(std::string m) { return {SAMPLEATTN_NULL_POINTER, std::move(m)}; }
inline Status invalid_shape(std::string m) { return {SAMPLEATTN_INVALID_SHAPE, std::move(m)}; }
inline Status out_of_memory(std::string m) { return {SAMPLEATTN_OUT_OF_MEMORY, std::move(m)}; }
inline Status unsupported_backend(std::string m) {
  return {SAMPLEATTN_UNSUPPORTED_BACKEND, std::move(m)};
}
inline Status internal_error(std::string m) { return {SAMPLEATTN_INTERNAL_ERROR, std::move(m)}; }

#define SAMPLEATTN_RETURN_IF_ERROR(expr)     \
  do {                                       \
    ::sampleattn::Status status_ = (expr);   \
    if (!status_.is_ok()) return status_;    \
  } while (0)

}  // namespace sampleattn
