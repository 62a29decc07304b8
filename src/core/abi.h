// The struct_size rules of the C ABI (docs/ABI.md), in one place: every struct that crosses the
// ABI is read into, and written back from, a full-size copy of the library's own layout.
//
// - A caller's struct may be smaller than the library's (built against an older header) down to
//   the first ABI 1 layout; the missing tail takes its defaults and is never written.
// - A struct_size larger than the library's struct is refused with SAMPLEATTN_UNSUPPORTED_VERSION.
// - *_init writes exactly the caller's size (the header's macros pass sizeof(*ptr)).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>

#include "core/status.h"
#include "sampleattn/sampleattn.h"

#define SAMPLEATTN_STRINGIFY_(x) #x
#define SAMPLEATTN_STRINGIFY(x) SAMPLEATTN_STRINGIFY_(x)
// "major.minor.patch" of this header (what sampleattn_version() returns).
#define SAMPLEATTN_VERSION_STRING                                                  \
  SAMPLEATTN_STRINGIFY(SAMPLEATTN_VERSION_MAJOR) "." SAMPLEATTN_STRINGIFY(         \
      SAMPLEATTN_VERSION_MINOR) "." SAMPLEATTN_STRINGIFY(SAMPLEATTN_VERSION_PATCH)

namespace sampleattn::abi {

// The smallest accepted struct_size: the end of the last field of the first ABI 1 layout
// (tests/abi/v1.0/sampleattn/sampleattn.h is that layout, frozen).
template <typename T>
constexpr size_t min_size();
#define SAMPLEATTN_ABI_FIRST_LAYOUT(T, last_field) \
  template <>                                       \
  constexpr size_t min_size<T>() {                  \
    return offsetof(T, last_field) + sizeof(T::last_field); \
  }
SAMPLEATTN_ABI_FIRST_LAYOUT(sampleattn_context_options, max_workspace_bytes)
SAMPLEATTN_ABI_FIRST_LAYOUT(sampleattn_context_info, note)
SAMPLEATTN_ABI_FIRST_LAYOUT(sampleattn_sample_params, max_density)
SAMPLEATTN_ABI_FIRST_LAYOUT(sampleattn_params, stream)
SAMPLEATTN_ABI_FIRST_LAYOUT(sampleattn_stats, stripes_required)
SAMPLEATTN_ABI_FIRST_LAYOUT(sampleattn_plan_info, dense_flops)
SAMPLEATTN_ABI_FIRST_LAYOUT(sampleattn_kv_cache, scale_page_stride)  // new in ABI 1.4
#undef SAMPLEATTN_ABI_FIRST_LAYOUT
// sampleattn_head_stats has no struct_size (it is an array element): its first layout's size is
// the default stride of the caller's array (sampleattn_stats.head_stats_size).
inline constexpr uint32_t kFirstHeadStatsSize = offsetof(sampleattn_head_stats, cra_mean) + sizeof(float);

template <typename T>
bool size_accepted(size_t size) {
  return size >= min_size<T>() && size <= sizeof(T);
}

// *_init_sized: writes `defaults` (with struct_size = size) into the caller's first `size` bytes,
// or nothing when the size is not one the library accepts.
template <typename T>
void init(T* out, size_t size, T defaults) {
  static_assert(std::is_trivially_copyable_v<T> && offsetof(T, struct_size) == 0);
  if (out == nullptr || !size_accepted<T>(size)) return;
  defaults.struct_size = static_cast<uint32_t>(size);
  std::memcpy(static_cast<void*>(out), &defaults, size);
}

// Reads the caller's struct into a full-size copy: `defaults`, overwritten by the caller's
// struct_size bytes. `name` names the struct in the message.
template <typename T>
Status read(const T& in, const char* name, const char* init_name, T defaults, T* out) {
  const size_t size = in.struct_size;
  if (size > sizeof(T)) {
    return {SAMPLEATTN_UNSUPPORTED_VERSION,
            std::string(name) + ".struct_size is " + std::to_string(size) + ", larger than this library's " +
                std::to_string(sizeof(T)) + ": the caller was built against a newer sampleattn.h than library " SAMPLEATTN_VERSION_STRING " knows"};
  }
  if (size < min_size<T>()) {
    return invalid_argument(std::string(name) + ".struct_size is " + std::to_string(size) +
                            ", below the first ABI 1 layout (" + std::to_string(min_size<T>()) +
                            " bytes): fill it with " + init_name + "()");
  }
  std::memcpy(static_cast<void*>(out), &defaults, sizeof(T));
  std::memcpy(static_cast<void*>(out), &in, size);
  return Status::ok();
}

// Writes a full-size result back into the caller's struct_size bytes (already validated by read,
// or by check_output_size), keeping the caller's struct_size.
template <typename T>
void write_back(const T& full, T* caller) {
  const uint32_t size = caller->struct_size;
  std::memcpy(static_cast<void*>(caller), &full, size);
  caller->struct_size = size;
}

// For structs the library only writes: the caller's struct_size must be one it accepts.
template <typename T>
Status check_output_size(const T& caller, const char* name, const char* init_name) {
  T scratch{};
  return read(caller, name, init_name, T{}, &scratch);
}

}  // namespace sampleattn::abi
