// A 64-byte aligned heap buffer of the CPU backend's call-lifetime data (packed stripes, packed
// keys): allocated without throwing, so that a failure becomes OUT_OF_MEMORY.
#pragma once

#include <cstddef>
#include <memory>
#include <new>

namespace sampleattn::cpu {

struct AlignedDelete {
  void operator()(char* p) const { ::operator delete[](p, std::align_val_t(64)); }
};
using AlignedBuffer = std::unique_ptr<char[], AlignedDelete>;

// Null when the memory is not there.
inline AlignedBuffer allocate_aligned(size_t bytes) {
  return AlignedBuffer(static_cast<char*>(::operator new[](bytes, std::align_val_t(64), std::nothrow)));
}

}  // namespace sampleattn::cpu
