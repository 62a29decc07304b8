// A Collective (core/collective.h) over threads of one process: each thread plays one process of a
// sharded call, so the sharded stages can be tested without MPI (the MPI layer's own tests run
// them under mpirun). Every operation is an exchange of pointers between two barriers: each thread
// posts its input, all read what they need from every input in rank order (so sums are added in
// rank order, the same on every thread), then all pass the second barrier before an input can go.
#pragma once

#include <barrier>
#include <cstring>
#include <functional>
#include <thread>
#include <vector>

#include "core/collective.h"

namespace sampleattn::testing {

class ThreadWorld {
 public:
  explicit ThreadWorld(int processes) : slots_(static_cast<size_t>(processes)), barrier_(processes) {}
  int size() const { return static_cast<int>(slots_.size()); }

  // Posts `mine`, then calls read(slots) with every thread's post, rank order.
  template <typename Read>
  void exchange(int rank, const void* mine, Read&& read) {
    slots_[static_cast<size_t>(rank)] = mine;
    barrier_.arrive_and_wait();
    read(slots_);
    barrier_.arrive_and_wait();
  }

  // Runs body(rank) on one thread per process and waits for them all.
  void run(const std::function<void(int)>& body) {
    std::vector<std::thread> threads;
    for (int r = 0; r < size(); ++r) threads.emplace_back(body, r);
    for (std::thread& t : threads) t.join();
  }

 private:
  std::vector<const void*> slots_;
  std::barrier<> barrier_;
};

class ThreadCollective final : public Collective {
 public:
  ThreadCollective(ThreadWorld& world, int rank) : world_(world), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return world_.size(); }

  Status sum(int64_t* values, int64_t n) override { return reduce(values, n, [](int64_t a, int64_t b) { return a + b; }); }
  Status sum(double* values, int64_t n) override { return reduce(values, n, [](double a, double b) { return a + b; }); }
  Status max(float* values, int64_t n) override {
    return reduce(values, n, [](float a, float b) { return a < b ? b : a; });
  }

  Status all_gather(const void* send, void* recv, const int64_t* recv_bytes) override {
    world_.exchange(rank_, send, [&](const std::vector<const void*>& slots) {
      char* out = static_cast<char*>(recv);
      for (int r = 0; r < size(); ++r) {
        if (recv_bytes[r] > 0) std::memcpy(out, slots[static_cast<size_t>(r)], static_cast<size_t>(recv_bytes[r]));
        out += recv_bytes[r];
      }
    });
    return Status::ok();
  }

  Status all_to_all(const void* send, const int64_t* send_bytes, void* recv, const int64_t* recv_bytes,
                    Payload) override {
    const Post mine{static_cast<const char*>(send), send_bytes};
    world_.exchange(rank_, &mine, [&](const std::vector<const void*>& slots) {
      char* out = static_cast<char*>(recv);
      for (int r = 0; r < size(); ++r) {
        const Post& from = *static_cast<const Post*>(slots[static_cast<size_t>(r)]);
        int64_t at = 0;
        for (int t = 0; t < rank_; ++t) at += from.bytes[t];
        if (recv_bytes[r] > 0) std::memcpy(out, from.data + at, static_cast<size_t>(recv_bytes[r]));
        out += recv_bytes[r];
      }
    });
    return Status::ok();
  }

 private:
  struct Post {
    const char* data;
    const int64_t* bytes;
  };
  template <typename T, typename Op>
  Status reduce(T* values, int64_t n, Op op) {
    const std::vector<T> mine(values, values + n);
    world_.exchange(rank_, mine.data(), [&](const std::vector<const void*>& slots) {
      for (int64_t i = 0; i < n; ++i) {
        T v = static_cast<const T*>(slots[0])[i];
        for (size_t r = 1; r < slots.size(); ++r) v = op(v, static_cast<const T*>(slots[r])[i]);
        values[i] = v;
      }
    });
    return Status::ok();
  }

  ThreadWorld& world_;
  int rank_;
};

}  // namespace sampleattn::testing
