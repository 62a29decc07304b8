// Carves a worker's scratch buffer into 64-byte-aligned arrays. The same function that carves a
// layout also sizes it (carve from a null base, read used()), so each layout is written once.
#pragma once

#include <cstddef>

namespace sampleattn::cpu {

class ScratchCarver {
 public:
  explicit ScratchCarver(void* base = nullptr) : base_(static_cast<char*>(base)) {}

  template <typename T>
  T* take(size_t count) {
    return static_cast<T*>(take_bytes(sizeof(T) * count));
  }
  void* take_bytes(size_t bytes) {
    char* here = base_ ? base_ + used_ : nullptr;
    used_ += (bytes + 63) / 64 * 64;
    return here;
  }
  size_t used() const { return used_; }

 private:
  char* base_;
  size_t used_ = 0;
};

}  // namespace sampleattn::cpu
