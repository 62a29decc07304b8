// A 64-byte aligned heap buffer of the CPU backend's call-lifetime data (packed stripes, packed
// keys): allocated without throwing, so that a failure becomes OUT_OF_MEMORY.
#pragma once

#include <cstddef>
#include <memory>
#include <new>

#include "cpu/cgroup_limits.h"

namespace sampleattn::cpu {

struct AlignedDelete {
  void operator()(char* p) const { ::operator delete[](p, std::align_val_t(64)); }
};
using AlignedBuffer = std::unique_ptr<char[], AlignedDelete>;

// Null when the memory is not there, or could never be (past memory_ceiling(): a host that
// overcommits would grant it and kill the process when the pages are touched).
inline AlignedBuffer allocate_aligned(size_t bytes) {
  if (!fits_memory_ceiling(bytes)) return nullptr;
  return AlignedBuffer(static_cast<char*>(::operator new[](bytes, std::align_val_t(64), std::nothrow)));
}

}  // namespace sampleattn::cpu
