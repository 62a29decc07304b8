// The call-lifetime buffers of a CPU context (stage 1's packed keys, the look's keys, the packed
// stripes, a sharded call's wave buffers), kept from call to call as the pool keeps its workers'
// scratch.
//
// A buffer is taken for a call (a Lease) and comes back when the lease ends; the next call takes
// it again when it is large enough. Fresh memory costs a fault a page when first written, and on
// a VM more: stage 1's 128 MB of packed keys (32K tokens, f32, 8 kv heads), allocated afresh,
// took 0.27-0.41 s to pack on one Zen 4 core of the 2-core VM at times, 0.03 s into memory that
// was kept (docs/PERF.md, 2026-12-05 (evening)). The set holds at most one call's buffers:
// when none kept is large enough, the largest kept one is freed before the new one is allocated.
// CpuBackend gives them back when a workspace limit needs the room (release()).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <utility>
#include <vector>

#include "cpu/aligned_buffer.h"

namespace sampleattn::cpu {

class CallBuffers {
 public:
  // A buffer in use; given back to its set when it ends (moved from: empty).
  class Lease {
   public:
    Lease() = default;
    Lease(Lease&& other) noexcept { *this = std::move(other); }
    Lease& operator=(Lease&& other) noexcept {
      if (this != &other) {
        give_back();
        owner_ = std::exchange(other.owner_, nullptr);
        buffer_ = std::move(other.buffer_);
        capacity_ = std::exchange(other.capacity_, 0);
      }
      return *this;
    }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ~Lease() { give_back(); }

    char* get() const { return buffer_.get(); }
    explicit operator bool() const { return buffer_ != nullptr; }

   private:
    friend class CallBuffers;
    Lease(CallBuffers* owner, AlignedBuffer buffer, size_t capacity)
        : owner_(owner), buffer_(std::move(buffer)), capacity_(capacity) {}
    void give_back() {
      if (owner_ != nullptr && buffer_ != nullptr) owner_->keep(std::move(buffer_), capacity_);
      owner_ = nullptr;
      buffer_.reset();
      capacity_ = 0;
    }
    CallBuffers* owner_ = nullptr;
    AlignedBuffer buffer_;
    size_t capacity_ = 0;
  };

  CallBuffers() = default;
  CallBuffers(const CallBuffers&) = delete;
  CallBuffers& operator=(const CallBuffers&) = delete;

  // At least `bytes`, 64-byte aligned, contents undefined: the smallest kept buffer that holds
  // them, else a new one (an empty lease when the memory is not there).
  Lease take(size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    const size_t none = kept_.size();
    size_t best = none, largest = none;
    for (size_t i = 0; i < kept_.size(); ++i) {
      if (kept_[i].capacity >= bytes && (best == none || kept_[i].capacity < kept_[best].capacity)) best = i;
      if (largest == none || kept_[i].capacity > kept_[largest].capacity) largest = i;
    }
    if (best != none) {
      Kept k = std::move(kept_[best]);
      kept_.erase(kept_.begin() + static_cast<std::ptrdiff_t>(best));
      return Lease(this, std::move(k.buffer), k.capacity);
    }
    if (largest != none) kept_.erase(kept_.begin() + static_cast<std::ptrdiff_t>(largest));  // too small: make room
    const size_t capacity = rounded(bytes);
    AlignedBuffer fresh = allocate_aligned(capacity);
    if (fresh == nullptr) return Lease();
    return Lease(this, std::move(fresh), capacity);
  }

  // Bytes kept and not in use.
  uint64_t held_bytes() {
    std::lock_guard<std::mutex> lock(mutex_);
    uint64_t bytes = 0;
    for (const Kept& k : kept_) bytes += k.capacity;
    return bytes;
  }

  // Frees every kept buffer not in use.
  void release() {
    std::vector<Kept> dropped;
    std::lock_guard<std::mutex> lock(mutex_);
    dropped.swap(kept_);
  }

 private:
  struct Kept {
    AlignedBuffer buffer;
    size_t capacity;
  };
  // Sizes rounded up to 1/16 of themselves (at least 64 bytes), so that the next call's slightly
  // larger request still finds its buffer.
  static size_t rounded(size_t bytes) {
    if (bytes <= 64) return 64;
    const size_t top = size_t{1} << (63 - __builtin_clzll(static_cast<unsigned long long>(bytes)));  // <= bytes
    const size_t step = std::max<size_t>(64, top / 16);
    return bytes > SIZE_MAX - step ? bytes : (bytes + step - 1) / step * step;
  }
  void keep(AlignedBuffer buffer, size_t capacity) {
    std::lock_guard<std::mutex> lock(mutex_);
    try {
      kept_.push_back(Kept{std::move(buffer), capacity});
    } catch (const std::bad_alloc&) {
      // not kept: freed with the buffer
    }
  }

  std::mutex mutex_;
  std::vector<Kept> kept_;
};

}  // namespace sampleattn::cpu
